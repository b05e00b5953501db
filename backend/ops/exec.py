"""Exec: run a process on the root snapshot's layers with a fresh upper, then commit the upper.

USER is resolved against the mounted root (``backend.fs.userdb``), the working directory is created
when missing (by the runtime), mount stubs are removed from the upper before it is committed, and
every secret value of the build is redacted from every output line before it becomes an event
(``backend.output``); what the step wrote is scanned for those values when the build has any
(``backend.ops.secretscan``).  The run bundle (whose config.json may hold a secret env var) lives on a
tmpfs and is deleted with the run.  The process itself runs behind ``ws.executor``
(``backend.runtime.executor``).

A cache mount's ``id`` and ``sharing`` say which persistent dir a step gets and how concurrent users
share it, not what the step reads (a cache's contents are never part of a key), so changing either
does not re-run the step — as BuildKit (moby/buildkit#4585) keys it.
"""

from __future__ import annotations

import contextlib
import posixpath
import tempfile
import time
from pathlib import Path

from ir import ops as irops
from ir.roots import platform_string

from backend.errors import BuildError, SolveError
from backend.fs import safefs
from backend.fs.mountpoints import remove_mount_stubs
from backend.fs.userdb import UserError, resolve_user
from backend.oci.layout import Platform
from backend.oci.mountdir import mark_secret
from backend.ops import debugshell
from backend.ops import mounts as mnt
from backend.ops import secretscan
from backend.ops.handler import OpHandler, Reads
from backend.ops.workspace import Step, Workspace
from backend.output import Lines
from backend.result import Snapshot
from backend.runtime import container as rt
from backend.runtime import emulation
from backend.runtime import spec


class ExecHandler(OpHandler):
    kind = "exec"
    cost = 10.0
    announces_start = True  # once it holds a job slot

    def network(self, options) -> str:
        """Its own mode, or ``--network`` for ``default``."""
        ex = self.op.exec
        assert ex is not None
        return ex.network if ex.network != "default" else options.network

    def grant_problems(self, options, where: str) -> list[str]:
        ex = self.op.exec
        assert ex is not None
        problems = []
        if self.network(options) == "host" and not options.entitlements.network_host:
            how = "the step asks for network=host" if ex.network == "host" else "--network host gives the step"
            problems.append(f"{where}: {how} (the host's network namespace), which was not allowed; "
                            "pass --allow network.host")
        if ex.security == "insecure" and not options.entitlements.insecure:
            problems.append(f"{where}: the step asks for security=insecure (all capabilities), which was not "
                            "allowed; pass --allow security.insecure")
        return problems + [f"{where}: {p}" for m in ex.mounts if (p := mnt.missing_grant(m, options))]

    def key_body(self) -> irops.Op:
        """Cache mounts keyed as the Dockerfile default (id = target, shared), so a default cache mount
        keeps its older keys; ``uid``/``gid``/``mode`` (the new dir's owner and mode, which the step
        sees) stay in the key."""
        op = super().key_body()
        ex = op.exec
        assert ex is not None
        if not any(m.cache is not None and (m.cache.id != m.target or m.cache.sharing != "shared")
                   for m in ex.mounts):
            return op
        mounts = tuple(irops.replace(m, cache=irops.replace(m.cache, id=m.target, sharing="shared"))
                       if m.cache is not None else m for m in ex.mounts)
        return irops.replace(op, exec=irops.replace(ex, mounts=mounts))

    def reads(self, index: int) -> Reads:
        """One ``("mount", action)`` per bind or cache-seed mount of a sub-path (the mount resolves
        ``selector`` as a copy that follows symlinks would, and sees the selected file or dir with its
        mode, owner and everything below it); the rootfs, a mount of an input's root and an output
        mount read the input whole."""
        ex = self.op.exec
        assert ex is not None
        reads: list[tuple[str, irops.CopyAction]] = []
        for n, m in enumerate(ex.mounts):
            if m.input != index:
                continue
            whole = posixpath.normpath("/" + m.selector.lstrip("/")) == "/"
            if n == 0 or m.type not in ("bind", "cache") or m.output >= 0 or whole:
                return None
            reads.append(("mount", irops.CopyAction(src=index, src_path=m.selector, dest="/", follow_symlinks=True)))
        return reads or None

    def key_extra(self, options) -> str:
        """``--network none|host`` changes what a ``network: default`` step sees, as its own
        ``RUN --network=`` would."""
        ex = self.op.exec
        assert ex is not None
        return f"network={options.network}" if ex.network == "default" and options.network != "default" else ""

    def run(self, ws: Workspace, step: Step, inputs: list[Snapshot]) -> list[Snapshot]:
        ex = self.op.exec
        assert ex is not None
        emulation.check(platform_string(ex.platform), Platform.host().architecture)  # a foreign step: QEMU there?
        n = max((m.output for m in ex.mounts), default=-1) + 1
        return run_exec(ws, step, ex, inputs, n, self.network(ws.options))


def run_exec(ws: Workspace, step: Step, ex: irops.ExecOp, inputs: list[Snapshot], n_outputs: int,
             network: str) -> list[Snapshot]:
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
            prepared = mnt.prepare(ws, stack, step, ex, inputs, secrets_dir)
            try:
                user = resolve_user(rootfs, ex.user)
            except UserError as e:
                raise SolveError(str(e)) from None
            process = spec.Process(args=ex.args, env=[*ex.env, *prepared.env], cwd=ex.cwd, uid=user.uid,
                                   gid=user.gid, additional_gids=user.additional_gids,
                                   rlimits=[(u.name, u.soft, u.hard) for u in ex.ulimits])
            sandbox = spec.Sandbox([(h.host, h.ip) for h in ex.extra_hosts], ex.shm_size)
            since = time.time() - 0.05  # ctimes come from a coarse clock, at most a tick behind
            ws.executor.ready()
            waited = time.monotonic()
            with ws.exec_slots:
                if ws.cancel.is_set():
                    raise rt.Cancelled("build cancelled")
                step.event("started")
                step.started = time.monotonic()
                if time.monotonic() - waited > 0.5:
                    step.info(f"waited {time.monotonic() - waited:.1f}s for a free job slot")
                failure = ""
                try:
                    code = ws.executor.run(rootfs, process, prepared.mounts, network=network,
                                           hostname=ex.hostname or "buildkitsandbox", output=lines,
                                           cancel=ws.cancel, privileged=ex.security == "insecure", sandbox=sandbox)
                except spec.ContainerStartError as e:  # (a missing executable): reported below
                    code, failure = None, str(e)
                finally:  # failed or not: the cache mount stays, and a later build could export it
                    in_caches = _secrets_in_caches(ws, prepared, since) if ws.redactor else []
            lines.flush()
            if code != 0:
                if getattr(ws.options, "debug_shell", None) is not None:
                    debugshell.open_shell(ws, step, ex, rootfs, process, prepared, network, sandbox, code)
                    if ws.redactor:  # a shell given the secrets may have written one into a cache
                        _secrets_in_caches(ws, prepared, since)
                if code is None:
                    raise BuildError(failure, output_tail=tuple(lines.tail))
                raise process_failed(ex.args, code, tuple(lines.tail))
            targets = spec.mount_targets(prepared.mounts)
        remove_mount_stubs(upper, lowers, targets, keep=[ex.cwd])
        if ws.redactor:
            _report_secrets(ws, step, upper, prepared, in_caches)
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


def _secrets_in_caches(ws: Workspace, prepared: mnt.Prepared, since: float) -> list[str]:
    """Where in its writable cache mounts the step wrote a secret value of the build; each such
    mount is marked so that no ``--cache-to`` exports it (``backend.oci.mountdir``)."""
    found = []
    for target, path in prepared.caches:
        hits = secretscan.find(ws.redactor, path, since)
        if hits:
            mark_secret(path)
        found += [f"cache mount {target}: {target.rstrip('/')}/{p}" for p in hits]
    return found


def _report_secrets(ws: Workspace, step: Step, upper: Path, prepared: mnt.Prepared, in_caches: list[str]) -> None:
    """Warn (naming the step and the paths, never the value) when the step wrote a secret value of
    the build into its layer, an output mount or a cache mount (``backend.ops.secretscan``)."""
    found = ["/" + p for p in secretscan.find(ws.redactor, upper)]
    for index, (_, mupper) in prepared.outputs.items():
        found += [f"output mount {index}: /{p}" for p in secretscan.find(ws.redactor, mupper)]
    found += in_caches
    for where in found:
        step.info(f"warning: {step.description or step.digest[:19]}: a secret value of this build was written "
                  f"to {where} (it stays in the {'cache, never exported' if where.startswith('cache') else 'image'}; "
                  "use a secret mount instead of copying the value)")


def process_failed(args, code: int, tail: tuple[str, ...]) -> BuildError:
    """How a step whose process exited ``code`` fails, wherever it ran (here or on a build farm)."""
    return BuildError(f"process {_argv(args)} did not complete successfully: exit code {code}",
                      output_tail=tail, exit_code=code)


def _argv(args) -> str:
    text = " ".join(args)
    return repr(text if len(text) <= 200 else text[:200] + "…")
