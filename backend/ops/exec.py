"""Exec: run a process on the root snapshot's layers with a fresh upper, then commit the upper.

USER is resolved against the mounted root (``backend.userdb``), the working directory is created
when missing (by the runtime), mount stubs are removed from the upper before it is committed, and
secret values are redacted from every output line before it becomes an event.  The run bundle
(whose config.json may hold a secret env var) lives on a tmpfs and is deleted with the run.
"""

from __future__ import annotations

import collections
import contextlib
import shutil
import tempfile
import time
from pathlib import Path

from ir import ops as irops

from backend import mounts as mnt
from backend import runtime as rt
from backend.errors import BuildError, SolveError
from backend.mountpoints import remove_mount_stubs
from backend.ops import Step, Workspace
from backend.result import Snapshot
from backend.userdb import UserError, resolve_user

TAIL_LINES = 20


def redaction_forms(secrets: list[bytes]) -> list[bytes]:
    """What to replace in output lines, longest first: each value, the value without surrounding
    whitespace (a file written by ``echo value > file`` ends in a newline, which never reaches a
    split line), and each line of a multi-line value (8 bytes or more, e.g. a PEM key's lines)."""
    forms: set[bytes] = set()
    for s in secrets:
        forms.update(f for f in (s, s.strip()) if f)
        if b"\n" in s.strip():
            forms.update(part.strip() for part in s.split(b"\n") if len(part.strip()) >= 8)
    return sorted(forms, key=len, reverse=True)


class _Lines:
    """Splits the output stream into lines, redacts secrets, emits log events, keeps the tail."""

    def __init__(self, step: Step, secrets: list[bytes]):
        self.step = step
        self.secrets = redaction_forms(secrets)
        self.buf = b""
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

    def __call__(self, chunk: bytes) -> None:
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            self._emit(line)

    def _emit(self, line: bytes) -> None:
        for s in self.secrets:
            line = line.replace(s, b"****")
        text = line.decode("utf-8", "replace")
        self.tail.append(text)
        self.step.log(text)

    def flush(self) -> None:
        if self.buf:
            self._emit(self.buf)
            self.buf = b""


def run_exec(ws: Workspace, step: Step, ex: irops.ExecOp, inputs: list[Snapshot], n_outputs: int) -> list[Snapshot]:
    root_mount = ex.mounts[0]
    root_snap = inputs[root_mount.input] if root_mount.input >= 0 else None
    lowers = ws.lowers(root_snap) if root_snap is not None else []
    work = ws.temp_dir("exec-")
    upper = work / "upper"
    upper.mkdir()
    # inside the solve's runtime state dir, so a later build removes it if this one is killed
    secrets_dir = Path(tempfile.mkdtemp(prefix="secrets-", dir=ws.state_dir))
    lines = _Lines(step, [])
    try:
        with contextlib.ExitStack() as stack:
            rootfs = stack.enter_context(ws.snapshotter.mounted(lowers, upper, work / "work"))
            prepared = mnt.prepare(ws, stack, step.description or step.digest, ex, inputs, secrets_dir)
            lines.secrets = redaction_forms(prepared.secrets)
            try:
                user = resolve_user(rootfs, ex.user)
            except UserError as e:
                raise SolveError(str(e)) from None
            process = rt.Process(args=ex.args, env=[*ex.env, *prepared.env], cwd=ex.cwd, uid=user.uid,
                                 gid=user.gid, additional_gids=user.additional_gids)
            network = ex.network if ex.network != "default" else ws.options.network
            runtime = ws.find_runtime()
            waited = time.monotonic()
            with ws.exec_slots:
                if ws.cancel.is_set():
                    raise rt.Cancelled("build cancelled")
                step.event("started")
                step.started = time.monotonic()
                if time.monotonic() - waited > 0.5:
                    step.info(f"waited {time.monotonic() - waited:.1f}s for a free job slot")
                try:
                    code = rt.run(rootfs, process, prepared.mounts, network=network,
                                  hostname=ex.hostname or "buildkitsandbox", output=lines, state_dir=ws.state_dir,
                                  cancel=ws.cancel, runtime=runtime, privileged=ex.security == "insecure",
                                  deferred=ws.deferred, networks=ws.networks)
                except rt.ContainerStartError as e:
                    lines.flush()
                    raise BuildError(str(e), output_tail=tuple(lines.tail)) from None
            lines.flush()
            if code != 0:
                raise BuildError(f"process {_argv(ex.args)} did not complete successfully: exit code {code}",
                                 output_tail=tuple(lines.tail), exit_code=code)
            targets = rt.mount_targets(prepared.mounts)
        remove_mount_stubs(upper, lowers, targets, keep=[ex.cwd])
        results: dict[int, Snapshot] = {}
        base_ids = [f"sha256:{p.name}" for p in lowers]
        if root_mount.output >= 0:
            lid = ws.commit(upper)
            results[root_mount.output] = ws.snapshot(base_ids + ([lid] if lid else []))
        for index, (mlowers, mupper) in prepared.outputs.items():
            lid = ws.commit(mupper)
            results[index] = ws.snapshot([f"sha256:{p.name}" for p in mlowers] + ([lid] if lid else []))
        return [results[i] for i in range(n_outputs)]
    finally:
        shutil.rmtree(secrets_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def _argv(args) -> str:
    text = " ".join(args)
    return repr(text if len(text) <= 200 else text[:200] + "…")
