"""``--on-error=shell``: an interactive shell in the container of the RUN step that failed, as
``docker buildx debug --on=error build`` opens one.

The exec handler calls ``open_shell`` when the step's process has exited non-zero and before it
reports the failure, while everything the step ran with is still in place: its rootfs (the same
overlay, the step's writes in its upper), its mounts (binds, cache dirs under the same locks, a fresh
tmpfs), its environment, working dir and user, its network mode and the same sandbox (the runtime
config comes from the same ``config_for``).  Nothing here is kept beyond the shell: when it exits
the step fails with its own error and the handler removes the upper as for any failure, so nothing
of the step reaches the cache.

Secret files, secret env vars and ssh agents are left out unless ``secrets`` was asked for
(``--debug-secrets``): a shell is a person typing, and its output goes straight to the terminal,
not through the redaction every step's output passes.  One shell per build, for the first step that
fails; not once the build is being cancelled (another step failed, or Ctrl-C).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ContextManager

from ir import ops as irops

from backend.errors import ContainerError
from backend.ops.mounts import Prepared
from backend.ops.workspace import Step, Workspace
from backend.runtime import spec
from backend.runtime.container import Cancelled

DEFAULT_SHELL = ("/bin/sh",)


@dataclass
class DebugShell:
    """What the user asked for: the command (``--debug-shell``), whether it gets the step's secrets,
    and ``hold``: a context manager the shell runs inside, which gives it the terminal (the CLI
    pauses its progress display there)."""

    args: tuple[str, ...] = DEFAULT_SHELL
    secrets: bool = False
    hold: Callable[[], ContextManager] = contextlib.nullcontext
    _claimed: threading.Lock = field(default_factory=threading.Lock)

    def claim(self) -> bool:
        """True once per build: the first failed step gets the shell."""
        return self._claimed.acquire(blocking=False)


def open_shell(ws: Workspace, step: Step, ex: irops.ExecOp, rootfs: Path, process: spec.Process,
               prepared: Prepared, network: str, sandbox: spec.Sandbox, code: int | None) -> None:
    """Run the shell in the failed step's container, if one was asked for and the build goes on;
    return when it exits.  ``code``: the step's exit code, None when its process could not start.  A
    shell that cannot start is a warning: the step's error is the one the build reports either way."""
    shell: DebugShell | None = getattr(ws.options, "debug_shell", None)
    if shell is None or ws.cancel.is_set() or not shell.claim():
        return
    name = step.description or step.digest[:19]
    if not os.isatty(0):
        step.info(f"warning: {name}: no terminal on stdin, so no debug shell")
        return
    private = [] if shell.secrets else prepared.private
    mounts = [m for m in prepared.mounts if m not in private]
    env = [*ex.env, *(e for e in prepared.env if e not in private)]
    run = spec.Process(args=shell.args, env=env, cwd=process.cwd, uid=process.uid, gid=process.gid,
                       additional_gids=process.additional_gids, rlimits=process.rlimits)
    withheld = ("" if shell.secrets or not prepared.private
                else "; its secrets and ssh agents withheld (--debug-secrets)")
    step.info(f"debug shell ({' '.join(shell.args)}) in the failed step's container: exit it to end the build"
              f"{withheld}; the step: {name}, " + (f"exit code {code}" if code is not None else "could not start"))
    try:
        with shell.hold():
            status = ws.executor.shell(rootfs, run, mounts, network=network,  # type: ignore[attr-defined]
                                       hostname=ex.hostname or "buildkitsandbox", cancel=ws.cancel,
                                       privileged=ex.security == "insecure", sandbox=sandbox)
    except Cancelled:  # the build is being torn down: its own error says why
        step.info("debug shell killed: the build was cancelled (interrupted, or another step failed)")
        return
    except ContainerError as e:
        step.info(f"warning: {name}: the debug shell did not start: {e}")
        return
    step.info(f"debug shell exited (status {status})")
