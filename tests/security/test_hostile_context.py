"""Hostile build contexts and Dockerfiles: COPY/ADD sources that climb out of the context or name
host paths, symlinks in the context pointing outside it (absolute and ``../..``), and symlinks
inside a stage used as COPY destinations.  Each case is built by the real CLI and must either
fail with a clear error or produce an image holding nothing from outside the context — and the
host must be untouched."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.support.cli import error_line, irctl
from tests.security.conftest import scan_tree, write_ctx

pytestmark = pytest.mark.e2e


@pytest.fixture
def world(tmp_path: Path):
    """A context next to an 'outside' dir holding a marker the image must never contain."""
    mark = f"OUTSIDE-{uuid.uuid4().hex}"
    outside = tmp_path / "outside"
    write_ctx(outside, {"secret.txt": mark, "sub/deep.txt": mark})
    ctx = write_ctx(tmp_path / "ctx", {"inside.txt": "inside\n", "dir/ok.txt": "ok\n"})
    os.symlink(outside / "secret.txt", ctx / "abs-file-link")
    os.symlink(outside, ctx / "abs-dir-link")
    os.symlink("../outside", ctx / "rel-dir-link")
    os.symlink("../../../../../../../../" + str(outside).lstrip("/") + "/secret.txt", ctx / "rel-file-link")
    os.symlink("/etc/shadow", ctx / "shadow-link")
    os.symlink("dir", ctx / "inner-link")
    return tmp_path, ctx, outside, mark


def build(tmp: Path, ctx: Path, dockerfile: str, layout_ctx: list[str], name: str):
    (ctx / "Dockerfile").write_text("FROM busybox\n" + dockerfile)
    out = tmp / f"out-{name}"
    r = irctl("build", ctx, "--progress", "plain", *layout_ctx, "--output", f"type=local,dest={out}",
              env={"IRCTL_CACHE_DIR": str(tmp / "cache")})
    return r, out


def _shadow_lines() -> list[bytes]:
    try:
        return [line.encode() for line in Path("/etc/shadow").read_text().splitlines() if ":$" in line]
    except OSError:
        return []


SOURCE_CASES = {
    "dotdot-copy": "COPY ../outside/secret.txt /x",
    "dotdot-add": "ADD ../outside/secret.txt /x",
    "dotdot-dir": "COPY ../outside/ /x/",
    "dotdot-wildcard": "COPY ../*/secret.txt /x/",
    "deep-dotdot": "COPY dir/../../outside/sub /x/",
    "absolute-host-path": "COPY {outside}/secret.txt /x",
    "absolute-etc": "COPY /etc/shadow /x",
    "abs-file-link": "COPY abs-file-link /x",
    "abs-file-link-add": "ADD abs-file-link /x",
    "abs-dir-link-followed": "COPY abs-dir-link/ /x/",
    "abs-dir-link-inner": "COPY abs-dir-link/secret.txt /x",
    "abs-dir-link-deep": "COPY abs-dir-link/sub/deep.txt /x",
    "rel-dir-link-inner": "COPY rel-dir-link/secret.txt /x",
    "rel-file-link": "COPY rel-file-link /x",
    "wildcard-through-links": "COPY *link*/secret.txt /x/",
    "shadow-link": "COPY shadow-link /x",
    "whole-context": "COPY . /x/",
    "whole-context-add": "ADD . /x/",
    "bind-mount-link": "RUN --mount=type=bind,source=abs-dir-link,target=/m cat /m/secret.txt > /x || true",
    "bind-mount-dotdot": "RUN --mount=type=bind,source=../outside,target=/m cat /m/secret.txt > /x || true",
}


@pytest.mark.parametrize("case", sorted(SOURCE_CASES))
def test_copy_sources_stay_in_the_context(world, layout_ctx, case):
    tmp, ctx, outside, mark = world
    r, out = build(tmp, ctx, SOURCE_CASES[case].format(outside=outside) + "\n", layout_ctx, case)
    if r.code != 0:
        assert "Traceback" not in r.stderr, r.stderr
        assert "error" in r.stderr.lower() or "ERROR" in r.stderr, r.stderr
        print(f"{case}: refused: {error_line(r.stderr)}")
        return
    hits = scan_tree(out, [mark.encode(), *_shadow_lines()]).hits
    assert hits == [], f"{case}: content from outside the context reached the image: {hits}"
    print(f"{case}: contained")


DEST_CASES = {
    "abs-dir-symlink": "RUN ln -s /etc /target\nCOPY {name} /target/",
    "rel-dir-symlink": "RUN ln -s ../../../../../../etc /target\nCOPY {name} /target/",
    "file-symlink": "RUN ln -s /etc/{name} /target\nCOPY {name} /target",
    "nested": "RUN mkdir -p /a && ln -s /etc /a/b\nCOPY {name} /a/b/c/",
    "workdir": "RUN ln -s /etc /w\nWORKDIR /w/sub\nRUN touch {name}-run\nCOPY {name} ./",
    "add": "RUN ln -s /etc /target\nADD {name} /target/",
    "proc-root": "RUN mkdir -p /x && ln -s /proc/1/root/etc /x/etc\nCOPY {name} /x/etc/",
}


@pytest.mark.parametrize("case", sorted(DEST_CASES))
def test_copy_destination_symlinks_stay_in_the_image(tmp_path, layout_ctx, case):
    name = f"irctl-pwned-{uuid.uuid4().hex}"
    ctx = write_ctx(tmp_path / "ctx", {name: "payload\n"})
    r, out = build(tmp_path, ctx, DEST_CASES[case].format(name=name) + "\n", layout_ctx, case)
    assert not list(Path("/etc").glob(f"{name}*")), f"{case}: wrote to the host's /etc"
    assert not list(Path("/").glob(f"{name}*"))
    if r.code != 0:
        assert "Traceback" not in r.stderr, r.stderr
        print(f"{case}: refused: {error_line(r.stderr)}")
        return
    found = [p for p in out.rglob(f"{name}*")]
    assert found, f"{case}: the file did not land in the image"
    print(f"{case}: contained at {[str(p.relative_to(out)) for p in found]}")


@pytest.mark.parametrize("use", ["USER pwn\nRUN id -u > /uid", "COPY --chown=pwn f /f"])
def test_user_lookup_never_reads_host_files(tmp_path, layout_ctx, use):
    """An image whose /etc/passwd is a symlink to a host file: USER and --chown resolve inside the
    image (the symlink leads nowhere), never against the host's file."""
    host = Path("/tmp") / f"irctl-hostpasswd-{uuid.uuid4().hex}"
    host.write_text("pwn:x:4242:4242::/:/bin/sh\n")
    try:
        ctx = write_ctx(tmp_path / "ctx", {"f": "x\n"})
        r, out = build(tmp_path, ctx, f"RUN ln -sf {host} /etc/passwd && ln -sf {host} /etc/group\n{use}\n",
                       layout_ctx, "user")
        assert r.code != 0, "the host's passwd file was used"
        assert "Traceback" not in r.stderr
        assert "pwn" in error_line(r.stderr), r.stderr
        print(f"{use.splitlines()[0]}: refused: {error_line(r.stderr)}")
    finally:
        host.unlink()
