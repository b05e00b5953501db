"""Class 1: nothing from an untrusted input executes on the host.

The audit's attacks, through the real CLI: a git source whose remote or ref is a git option
(``--upload-pack=touch …``) or a transport that runs a command (``ext::``, ``ssh://-oProxyCommand``);
the host's git configuration (hooks, fsmonitor, sshCommand) reached by a build; a Dockerfile whose
first line is ``# syntax=pydsl``; a context holding only ``build.py``.  Each must leave the marker
file unmade.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ir import builder as b
from tests.support.cli import irctl
from tests.support.inputs import make_repo, write_graph


# ------------------------------------------------------------------------------------ git options

def _injections(marker: Path) -> list[tuple[str, str]]:
    cmd = f"touch {marker}"
    return [
        (f"--upload-pack={cmd}", ""),  # the audit's
        (f"--upload-pack={cmd};", "main"),
        ("-u" + cmd.replace(" ", "${IFS}"), ""),
        (f"ext::sh -c {cmd.replace(' ', '% ')}", ""),  # git's ext:: remote helper runs a command
        ("fd::3", ""),
        (f"ssh://-oProxyCommand={cmd.replace(' ', '%20')}/x", ""),
        (f"-oProxyCommand={cmd}:x", ""),  # scp-like with an option as host
        (f"git@-oProxyCommand=x:{marker}", ""),
        ("https://example.com/r.git", f"--upload-pack={cmd}"),  # the ref, not the remote
        ("https://example.com/r.git", "-c"),
        ("https://example.com/r.git\n--upload-pack=x", ""),
        ("https://example.com/r.git", "main\n--upload-pack=x"),
        ("https://a@b@example.com/r.git", ""),  # read two ways by two URL parsers
        ("remote-foo://example.com/r", ""),  # an unknown scheme is an arbitrary git-remote-* helper
    ]


def test_git_remote_or_ref_never_becomes_an_option(tmp_path: Path, cache_env: dict) -> None:
    marker = tmp_path / "pwned"
    for i, (remote, ref) in enumerate(_injections(marker)):
        graph = write_graph(tmp_path / f"g{i}.ir", b.git(remote, ref))
        r = irctl("solve", graph, "--progress", "plain", env=cache_env, timeout=120)
        assert r.code != 0, (remote, ref, r.stderr)
        assert not marker.exists(), f"{remote!r} {ref!r} ran a command on the host"
        assert "Traceback" not in r.stderr
        assert "git remote" in r.stderr or "ref " in r.stderr, r.stderr
        assert "started" not in r.stderr.lower() or "0 started" in r.stderr  # refused before anything ran


def test_host_git_configuration_never_runs(tmp_path: Path) -> None:
    """Hooks, fsmonitor and sshCommand in the caller's global config, and GIT_* variables that would
    run code, are not used by a git source (granted, so git does run)."""
    home = tmp_path / "home"
    hooks = home / "hooks"
    hooks.mkdir(parents=True)
    marks = [tmp_path / f"ran-{n}" for n in ("hook", "fsmonitor", "ssh", "params", "gitssh", "lfs")]
    hook = hooks / "post-checkout"
    hook.write_text(f"#!/bin/sh\ntouch {marks[0]}\n")
    hook.chmod(0o755)
    (home / ".gitconfig").write_text(
        f"[core]\n\thooksPath = {hooks}\n\tfsmonitor = \"touch {marks[1]}; false\"\n"
        f"\tsshCommand = touch {marks[2]}\n[filter \"lfs\"]\n\tsmudge = touch {marks[5]}\n\trequired = true\n")
    repo = make_repo(tmp_path / "vault", {"a.txt": "A\n", ".gitattributes": "*.txt filter=lfs\n"})
    graph = write_graph(tmp_path / "g.ir", b.git(str(repo), "main"))
    env = {"HOME": str(home), "IRCTL_CACHE_DIR": str(tmp_path / "cache"), "XDG_CONFIG_HOME": str(home),
           "GIT_CONFIG_PARAMETERS": f"'core.fsmonitor'='touch {marks[3]}; false'",
           "GIT_SSH_COMMAND": f"touch {marks[4]}", "GIT_CONFIG_GLOBAL": str(home / ".gitconfig")}
    r = irctl("solve", graph, "--allow", f"fs.read={tmp_path / 'vault'}", "--progress", "plain", env=env)
    assert r.code == 0, r.stderr
    assert [m.name for m in marks if m.exists()] == []


def test_git_subdir_through_a_link_never_moves_host_files(tmp_path: Path, cache_env: dict) -> None:
    """A repository's symlink named as ``subdir`` must not make irctl move the link's target (a
    host directory) into the layer."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me\n")
    repo = make_repo(tmp_path / "vault", {"a.txt": "A\n"})
    (repo / "sub").symlink_to(victim)
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "add", "sub"], cwd=repo, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "link"], cwd=repo, check=True, env=env)
    for subdir in ("sub", "sub/."):
        graph = write_graph(tmp_path / "g.ir", b.git(str(repo), "main", subdir=subdir))
        r = irctl("solve", graph, "--allow", f"fs.read={tmp_path / 'vault'}", env=cache_env)
        assert (victim / "precious").read_text() == "keep me\n", subdir
        if r.code == 0:  # "sub/." may be refused by validation; either way nothing moved
            continue
        assert "Traceback" not in r.stderr and "sub" in r.stderr


# ------------------------------------------------------------------------------- frontends choice

EVIL_PY = """import os
open({marker!r}, "w").write("pwned")
from frontends.pydsl import image, target
target("default", image("busybox"))
"""


@pytest.mark.parametrize("first_line", ["# syntax=pydsl", "#syntax=pydsl", "# SYNTAX = pydsl", "  # syntax=pydsl"])
@pytest.mark.parametrize("name", ["Dockerfile", "Containerfile", "app.Dockerfile", "irctl.toml"])
def test_syntax_line_never_selects_a_frontend_that_runs_code(tmp_path: Path, cache_env: dict, name: str,
                                                               first_line: str) -> None:
    marker = tmp_path / "pwned"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / name).write_text(first_line + "\n" + EVIL_PY.format(marker=str(marker)))
    for args in (("build", ctx, "-f", ctx / name), ("compile", ctx, "-f", ctx / name, "-o", tmp_path / "o.ir")):
        r = irctl(*args, env=cache_env, timeout=60)
        assert not marker.exists(), args
        assert r.code != 0
        assert "--frontend pydsl" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("name", ["build.py", "irctl.py"])
def test_a_build_file_found_in_the_context_is_never_run(tmp_path: Path, cache_env: dict, name: str) -> None:
    marker = tmp_path / "pwned"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / name).write_text(EVIL_PY.format(marker=str(marker)))
    # (not from inside ctx for irctl.py: ``python -m irctl`` there runs ./irctl.py itself, see __main__.py)
    cwd = ctx if name == "build.py" else tmp_path
    for args in (("build", ctx), ("compile", ctx, "-o", tmp_path / "o.ir"), ("build", ctx, "-t", "x")):
        r = irctl(*args, cwd=cwd, env=cache_env, timeout=60)
        assert not marker.exists(), args
        if name == "build.py":  # found by the context search: refused with the way to ask for it
            assert r.code != 0 and "-f " in r.stderr and "--frontend pydsl" in r.stderr, r.stderr
        else:  # irctl.py is not a name the search looks for
            assert r.code != 0 and "Traceback" not in r.stderr, r.stderr


def test_modules_in_the_current_directory_are_never_imported(tmp_path: Path, cache_env: dict) -> None:
    """``python -m irctl`` inside a hostile checkout: its ir.py, typer.py … are not irctl's modules."""
    marker = tmp_path / "pwned"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for mod in ("ir", "typer", "frontends", "backend", "httpx", "msgspec", "lark", "zstandard"):
        (ctx / f"{mod}.py").write_text(f"open({str(marker)!r}, 'a').write({mod!r})\n")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY ir.py /\n")
    for args in (("frontends",), ("build", "."), ("compile", ".", "-o", tmp_path / "o.ir")):
        r = irctl(*args, cwd=ctx, env=cache_env, timeout=60)
        assert r.code == 0, r.stderr
        assert not marker.exists(), (args, marker.read_text())


def test_an_explicit_build_py_runs_only_in_the_sandbox(tmp_path: Path, cache_env: dict) -> None:
    """Chosen explicitly, the same file runs — in the sandbox, where the host path is not there."""
    marker = tmp_path / "pwned"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "build.py").write_text(EVIL_PY.format(marker=str(marker)))
    for args in (("build", ctx, "-f", ctx / "build.py"), ("compile", ctx, "--frontend", "pydsl", "-o", tmp_path / "o")):
        r = irctl(*args, env=cache_env, timeout=60)
        assert not marker.exists(), args
        assert r.code != 0
        assert r.stderr.startswith("build.py:2: FileNotFoundError"), r.stderr


def test_frontends_command_says_which_frontends_run_code() -> None:
    r = irctl("frontends")
    assert r.code == 0
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[1:]}
    assert "RUNS CODE" in r.stdout.splitlines()[0]
    assert "yes" in rows["pydsl"] and "no" in rows["dockerfile"] and "no" in rows["toml"]
