"""Exec: run a process on the root snapshot's layers with a fresh upper, then commit the upper.

USER is resolved against the mounted root (``backend.fs.userdb``), the working directory is created
when missing (by the runtime), mount stubs are removed from the upper before it is committed, and
every secret value of the build is redacted from every output line before it becomes an event
(``backend.output``); what the step wrote is scanned for those values when the build has any
(``backend.ops.secretscan``).  The run bundle (whose config.json may hold a secret env var) lives on a
tmpfs and is deleted with the run.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

from ir import ops as irops

from backend.ops import mounts as mnt
from backend.runtime import container as rt
from backend.errors import BuildError, SolveError
from backend.fs.mountpoints import remove_mount_stubs
from backend.ops import Step, Workspace
from backend.output import Lines
from backend.result import Snapshot
from backend.fs.userdb import UserError, resolve_user
from backend.fs import safefs

def run_exec(ws: Workspace, step: Step, ex: irops.ExecOp, inputs: list[Snapshot], n_outputs: int) -> list[Snapshot]:
    root_mount = ex.mounts[0]
    root_snap = inputs[root_mount.input] if root_mount.input >= 0 else None
    lowers = ws.lowers(root_snap) if root_snap is not None else []
    work = ws.temp_dir("exec-")
    upper = work / "upper"
    upper.mkdir()
    # inside the solve's runtime state dir, so a later build removes it if this one is killed
    secrets_dir = Path(tempfile.mkdtemp(prefix="secrets-", dir=ws.state_dir))
    lines = Lines(step.log, ws.redactor)
    try:
        with contextlib.ExitStack() as stack:
            rootfs = stack.enter_context(ws.snapshotter.mounted(lowers, upper, work / "work"))
            prepared = mnt.prepare(ws, stack, step.description or step.digest, ex, inputs, secrets_dir)
            try:
                user = resolve_user(rootfs, ex.user)
            except UserError as e:
                raise SolveError(str(e)) from None
            process = rt.Process(args=ex.args, env=[*ex.env, *prepared.env], cwd=ex.cwd, uid=user.uid,
                                 gid=user.gid, additional_gids=user.additional_gids)
            network = ex.network if ex.network != "default" else ws.options.network
            since = time.time() - 0.05  # ctimes come from a coarse clock, at most a tick behind
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
        if ws.redactor:
            _report_secrets(ws, step, upper, prepared, since)
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
        safefs.rmtree(secrets_dir, ignore_errors=True)
        safefs.rmtree(work, ignore_errors=True)


def _report_secrets(ws: Workspace, step: Step, upper: Path, prepared: mnt.Prepared, since: float) -> None:
    """Warn (naming the step and the paths, never the value) when the step wrote a secret value of
    the build into its layer, an output mount or a cache mount (``backend.ops.secretscan``)."""
    from backend.ops import secretscan

    found = ["/" + p for p in secretscan.find(ws.redactor, upper)]
    for index, (_, mupper) in prepared.outputs.items():
        found += [f"output mount {index}: /{p}" for p in secretscan.find(ws.redactor, mupper)]
    for target, path in prepared.caches:
        found += [f"cache mount {target}: {target.rstrip('/')}/{p}" for p in secretscan.find(ws.redactor, path, since)]
    for where in found:
        step.info(f"warning: {step.description or step.digest[:19]}: a secret value of this build was written "
                  f"to {where} (it stays in the {'cache' if where.startswith('cache') else 'image'}; "
                  "use a secret mount instead of copying the value)")


def _argv(args) -> str:
    text = " ".join(args)
    return repr(text if len(text) <= 200 else text[:200] + "…")
