"""Build files and ignore files from an untrusted context: read with a size limit (16 MiB) and
never through a symlink that leaves the context (``frontends/files.py``).  A refusal names the
link, never quotes the target, and is one line (no traceback); ``-f`` naming a file outside the
context is the user's choice and read as named."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.security.measure import MIB, run_measured
from tests.support.cli import irctl_argv

OK = "FROM scratch\nCOPY a /a\n"


@pytest.fixture
def host(tmp_path: Path) -> dict:
    """Host files outside the context: text whose lines would make bad Dockerfile instructions and
    bad ignore patterns (so an error would quote them), and a binary."""
    marker = f"HOSTSECRET-{uuid.uuid4().hex}"
    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "shadow").write_text(f"{marker}:$6$hash:19000::::::\n[{marker}\n")
    (outside / "binary").write_bytes(b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 64 + marker.encode())
    (outside / "Dockerfile").write_text(OK)
    return {"marker": marker, "dir": outside}


def _ctx(tmp_path: Path, **files) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "a").write_text("a\n")
    for name, target in files.items():
        p = ctx / name.replace("__", "/")
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(target, Path) or (isinstance(target, str) and target.startswith("->")):
            os.symlink(str(target).removeprefix("->"), p)
        else:
            p.write_text(target)
    return ctx


def _refused(argv: list[str], tmp_path: Path, marker: str, *words: str) -> str:
    env = {**os.environ, "IRCTL_CACHE_DIR": str(tmp_path / "cache")}
    code, out, err, rss = run_measured(argv, env=env)
    text = (out + err).decode("utf-8", "replace")
    assert code not in (0, None) and "Traceback" not in text, text
    assert marker not in text and "$6$" not in text, text
    assert len(err.decode().strip().splitlines()) == 1, text
    for w in words:
        assert w in text, text
    assert rss < 200 * MIB
    return text


COMMANDS = [lambda ctx, *a: irctl_argv("compile", ctx, "-o", ctx.parent / "out.irg", *a),
            lambda ctx, *a: irctl_argv("build", ctx, "--progress", "plain", *a)]


@pytest.mark.parametrize("command", COMMANDS, ids=["compile", "build"])
@pytest.mark.parametrize("link", ["absolute", "relative", "chain", "through-dir"])
def test_a_build_file_linking_out_of_the_context_is_not_read(command, link: str, tmp_path: Path, host: dict) -> None:
    shadow = host["dir"] / "shadow"
    files = {"absolute": {"Dockerfile": shadow},
             "relative": {"Dockerfile": "->../host/shadow"},
             "chain": {"Dockerfile": "->sub/x", "sub__x": "->../../host/shadow"},
             "through-dir": {"Dockerfile": "->sub/shadow", "sub": host["dir"]}}[link]
    ctx = _ctx(tmp_path, **files)
    _refused(command(ctx), tmp_path, host["marker"], "Dockerfile", "outside the build context")
    # -f naming the link inside the context is confined the same way
    _refused(command(ctx, "-f", ctx / "Dockerfile"), tmp_path, host["marker"], "outside the build context")


@pytest.mark.parametrize("target", ["shadow", "binary"])
@pytest.mark.parametrize("name", [".dockerignore", "Dockerfile.dockerignore"])
def test_an_ignore_file_linking_out_of_the_context_is_not_read(target: str, name: str, tmp_path: Path,
                                                                host: dict) -> None:
    ctx = _ctx(tmp_path, Dockerfile=OK, **{name: host["dir"] / target})
    extra = ["-f", ctx / "Dockerfile"] if name != ".dockerignore" else []
    _refused(COMMANDS[0](ctx, *extra), tmp_path, host["marker"], name, "outside the build context")


def test_a_binary_ignore_file_inside_the_context_is_a_clear_error(tmp_path: Path, host: dict) -> None:
    ctx = _ctx(tmp_path, Dockerfile=OK)
    (ctx / ".dockerignore").write_bytes((host["dir"] / "binary").read_bytes())
    _refused(COMMANDS[0](ctx), tmp_path, host["marker"], ".dockerignore", "not UTF-8")


def test_links_inside_the_context_are_fine(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, **{"build__Dockerfile.real": OK, "Dockerfile": "->build/Dockerfile.real",
                            "ignore.txt": "*.tmp\n", ".dockerignore": "->ignore.txt"})
    code, out, err, _ = run_measured(COMMANDS[0](ctx), env={**os.environ, "IRCTL_CACHE_DIR": str(tmp_path / "c")})
    assert code == 0, err.decode()


def test_f_outside_the_context_is_read_as_named(tmp_path: Path, host: dict) -> None:
    """The user named it: a link there is followed (``-f ~/dockerfiles/app`` → wherever it points)."""
    link = tmp_path / "my.Dockerfile"
    link.symlink_to(host["dir"] / "Dockerfile")
    ctx = _ctx(tmp_path)
    env = {**os.environ, "IRCTL_CACHE_DIR": str(tmp_path / "c")}
    code, out, err, _ = run_measured(COMMANDS[0](ctx, "-f", link), env=env)
    assert code == 0, err.decode()


@pytest.mark.parametrize("where", ["context", "outside", "ignore"])
def test_huge_sparse_files_are_refused_before_reading(where: str, tmp_path: Path, host: dict) -> None:
    ctx = _ctx(tmp_path, Dockerfile=OK)
    big = {"context": ctx / "Dockerfile", "outside": tmp_path / "big", "ignore": ctx / ".dockerignore"}[where]
    with open(big, "wb") as f:
        f.truncate(8 << 30)  # 8 GiB, sparse
    extra = ["-f", big] if where == "outside" else []
    text = _refused(COMMANDS[0](ctx, *extra), tmp_path, host["marker"], "over the limit of 16.0 MiB")
    assert "8.0 GiB" in text


def test_a_file_just_over_the_limit_is_refused_and_one_under_is_read(tmp_path: Path) -> None:
    from frontends.files import MAX_SIZE, FileError, read_context_file

    ctx = _ctx(tmp_path)
    (ctx / "f").write_bytes(b"#" * MAX_SIZE)
    assert len(read_context_file(ctx / "f", ctx, "build file")) == MAX_SIZE
    (ctx / "f").write_bytes(b"#" * (MAX_SIZE + 1))
    with pytest.raises(FileError, match="over the limit"):
        read_context_file(ctx / "f", ctx, "build file")
    os.mkfifo(ctx / "fifo")
    with pytest.raises(FileError, match="not a regular file"):  # and does not block
        read_context_file(ctx / "fifo", ctx, "build file")


@pytest.mark.parametrize("extra", [[], ["--syntax-only"]])
def test_dockerfile_parse_command_reads_bounded(extra: list, tmp_path: Path, host: dict) -> None:
    big = tmp_path / "Dockerfile"
    with open(big, "wb") as f:
        f.truncate(8 << 30)
    _refused(irctl_argv("dockerfile", "parse", *extra, big), tmp_path, host["marker"], "over the limit of 16.0 MiB")
