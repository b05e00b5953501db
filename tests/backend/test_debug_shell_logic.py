"""``--on-error=shell`` in the exec handler (``backend/ops/debugshell.py``), on the in-process
executor: which failure gets the shell, what it is given, and that the build's failure stays the
step's own.  The real shell on a real terminal is tests/cli/test_debug_shell.py's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backend.errors import BuildError
from backend.events import Recorder
from backend.oci.mountdir import holds_secret
from backend.ops import debugshell
from backend.ops.debugshell import DebugShell
from backend.solve.solver import SolveOptions, solve
from ir import builder as b
from tests.support.fake_executor import FakeExecutor

ME = {"uid": os.getuid(), "gid": os.getgid()}
SECRETS = {"token": b"s3cret-in-a-file", "envtok": b"s3cret-in-the-env"}


@pytest.fixture(autouse=True)
def copy_snapshotter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRCTL_SNAPSHOTTER", "copy")


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """stdin is a terminal (under pytest it is not)."""
    monkeypatch.setattr(debugshell.os, "isatty", lambda fd: True)


def _failing() -> b.State:
    return b.scratch().with_meta("RUN fails").run(
        ["write", "/left", "written-by-step", "&&", "exit", "3"],
        mounts=[b.cache("/cache"), b.secret("token", **ME), b.secret("envtok", env="TOKEN_ENV")])


def _build(tmp_path: Path, state: b.State, shell: DebugShell | None, fake: FakeExecutor) -> tuple[BuildError, Recorder]:
    events = Recorder()
    options = SolveOptions(cache_dir=tmp_path / "cache", executor=fake, secrets=SECRETS, on_event=events,
                           debug_shell=shell)
    with pytest.raises(BuildError) as failed:
        solve(b.build_document({"default": state}), ["default"], options)
    return failed.value, events


def test_the_shell_gets_the_failed_steps_rootfs_and_mounts_but_not_its_secrets(tmp_path, terminal):
    fake = FakeExecutor()
    plain, _ = _build(tmp_path, _failing(), None, FakeExecutor())
    error, events = _build(tmp_path, _failing(), DebugShell(args=("cat", "/left", "&&", "exit", "9")), fake)
    ((shell, printed),) = fake.shells
    assert printed == "written-by-step\n"  # the step's write, in the rootfs the shell runs on
    assert "/cache" in shell.mounts and "/run/secrets/token" not in shell.mounts
    assert not any(e.startswith("TOKEN_ENV=") for e in shell.env)
    assert str(error) == str(plain) and error.exit_code == 3  # the step's failure, not the shell's 9
    assert any(e.text == "debug shell exited (status 9)" for e in events.of("info"))
    assert len(fake.runs) == 1  # the step ran (and failed) once; nothing of it was cached:
    _build(tmp_path, _failing(), None, fake)
    assert len(fake.runs) == 2


def test_debug_secrets_give_the_shell_the_steps_secrets(tmp_path, terminal):
    fake = FakeExecutor()
    _build(tmp_path, _failing(), DebugShell(args=("cat", "/run/secrets/token"), secrets=True), fake)
    ((shell, printed),) = fake.shells
    assert printed == "s3cret-in-a-file" and "TOKEN_ENV=s3cret-in-the-env" in shell.env


def test_only_the_first_failure_gets_a_shell(tmp_path, terminal):
    """Two steps fail at once; the second's failure (no shell for it) cancels the build, which kills
    the first one's shell."""
    fake = FakeExecutor()
    a = b.scratch().with_meta("RUN a").run(["exit", "4"])
    c = b.scratch().with_meta("RUN c").run(["exit", "5"])
    _, events = _build(tmp_path, a.merge([c]), DebugShell(args=("sleep", "30")), fake)
    assert len(fake.shells) == 1
    assert any(e.text.startswith("debug shell killed: the build was cancelled") for e in events.of("info"))


def test_without_a_terminal_there_is_no_shell_and_the_failure_is_the_same(tmp_path, monkeypatch):
    monkeypatch.setattr(debugshell.os, "isatty", lambda fd: False)
    fake = FakeExecutor()
    error, events = _build(tmp_path, _failing(), DebugShell(), fake)
    assert fake.shells == [] and error.exit_code == 3
    assert any("no terminal on stdin, so no debug shell" in e.text for e in events.of("info"))


def test_a_secret_the_shell_writes_into_a_cache_mount_marks_it_unexportable(tmp_path, terminal):
    """The step's own writes were scanned when it exited; what a shell given the secrets writes into
    a cache mount afterwards is scanned too, so ``--cache-to`` never exports that mount."""
    fake = FakeExecutor()
    _build(tmp_path, _failing(), DebugShell(args=("write", "/cache/typed", "s3cret-in-a-file"), secrets=True), fake)
    ((shell, _),) = fake.shells
    assert holds_secret(shell.mounts["/cache"])
