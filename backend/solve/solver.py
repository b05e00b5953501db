"""Solve an IR document: run what the targets need, reuse what the cache already has.

Each op is one task for the scheduler.  A task computes the op's cache key from the op's own bytes
with every input replaced by the *identity* of the input's result (its content, never how it was
made), looks the key up, and only on a miss runs the op's handler.  So a fully cached rebuild
mounts and executes nothing, and when an op re-runs but produces the same files, everything after
it is a hit again (early cutoff).  A COPY, or a RUN that bind-mounts part of an input, is keyed by
the checksum of exactly the files it selects, so editing an unrelated file does not re-run it.

The graph reaches the host only through ``SolveOptions`` grants (local dirs, OCI layouts, secrets,
ssh agents, ``entitlements``); secrets are never part of a key, a log line or a file in the store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import posixpath
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ir import ops as irops
from ir.codec import canonical_bytes
from ir.errors import ValidationErrors
from ir.validate import check_graph

from backend.store.cache import CacheStore, default_root
from backend.store.records import Output
from backend.runtime.container import reap_dead_build
from backend.entitlements import Entitlements
from backend.errors import BuildError, GrantError, SolveError
from backend.events import Event
from backend.ops import Step, Workspace, layer_id_of
from backend.output import Redactor
from backend.result import ImageMeta, Snapshot
from backend.solve.scheduler import critical_path, run_dag
from backend.fs import safefs

DEFAULT_JOBS = 16


@dataclass
class SolveOptions:
    cache_dir: Path | str | None = None  # default: $IRCTL_CACHE_DIR, $XDG_CACHE_HOME/irctl, ~/.cache/irctl
    local_dirs: dict[str, Path] = field(default_factory=dict)  # granted local contexts
    oci_layouts: dict[str, Path] = field(default_factory=dict)  # granted OCI layouts
    secrets: dict[str, bytes] = field(default_factory=dict)
    ssh: dict[str, Path] = field(default_factory=dict)  # agent id -> socket
    jobs: int = DEFAULT_JOBS  # concurrent execs
    no_cache: bool = False
    entitlements: Entitlements = field(default_factory=Entitlements)  # --allow
    network: str = "default"  # --network: what a step with `network: default` gets (default | none | host)
    insecure_registries: tuple[str, ...] = ()
    on_event: Callable[[Event], None] | None = None
    # unfiltered scans (backend.fs.context.ContextScan) of granted dirs by realpath, taken by this build
    # just before (the CLI's fast-path check): reused for sources without include/exclude patterns
    context_scans: dict[str, object] = field(default_factory=dict)
    materialize: bool = True  # make sure every layer of the returned snapshots exists as a dir
    # what each step's key was made of, saved for the next build's --explain (backend.solve.buildrecord)
    record: object = None
    # how the export will compress layers (backend.oci.precompress): the target image's new layers are
    # compressed that way in the background as their steps commit them; () compresses nothing early
    precompress: tuple = ()


def solve(doc: irops.Document, targets: list[str] | None = None, options: SolveOptions | None = None
          ) -> dict[str, Snapshot]:
    """Build ``targets`` (root names; default ``["default"]``) and return their snapshots."""
    return Solver(doc, options or SolveOptions()).solve(targets or ["default"])


# ------------------------------------------------------------------------------------- locations


def describe(doc: irops.Document, digest: str) -> tuple[str, str]:
    meta = doc.metadata.get(digest)
    op = doc.ops[digest]
    if meta is not None and meta.description:
        return meta.description, meta.group
    if op.exec is not None:
        return "RUN " + " ".join(op.exec.args), meta.group if meta else ""
    if op.source is not None:
        s = op.source
        name = (s.image and s.image.ref) or (s.local and f"local {s.local.name}") or (
            s.http and s.http.url) or (s.git and s.git.remote) or (s.oci_layout and f"oci-layout {s.oci_layout.name}") \
            or "scratch"
        return str(name), meta.group if meta else ""
    return op.kind, meta.group if meta else ""


def source_location(doc: irops.Document, digest: str, context: int = 2) -> str:
    """``Dockerfile:7`` and the source lines, the op's own marked with ``>>>`` (BuildKit style)."""
    meta = doc.metadata.get(digest)
    if meta is None:
        return ""
    blocks = []
    for loc in meta.locations:
        if not 0 <= loc.file < len(doc.sources):
            continue
        src = doc.sources[loc.file]
        lines = src.data.decode("utf-8", "replace").splitlines()
        end = loc.end_line or loc.line
        out = [f"{src.name}:{loc.line}" + (f"-{end}" if end != loc.line else ""), "-" * 20]
        for n in range(max(1, loc.line - context), min(len(lines), end) + 1):
            mark = ">>>" if loc.line <= n <= end else "   "
            out.append(f"{n:>4} | {mark} {lines[n - 1]}")
        out.append("-" * 20)
        blocks.append("\n".join(out))
    return "\n".join(blocks)


# ------------------------------------------------------------------------------------- keys


def key_body(op: irops.Op) -> irops.Op:
    """The op as its cache key sees it: without its inputs (their identities are added instead),
    and with what is a policy rather than an input left out.  A cache mount's ``id`` and
    ``sharing`` say which persistent dir a step gets and how concurrent users share it, not what
    the step reads (a cache's contents are never part of a key), so changing either does not
    re-run the step — as BuildKit (moby/buildkit#4585) keys it.  Such a mount is keyed as the
    Dockerfile default (id = target, shared), so a default cache mount keeps its older keys;
    ``uid``/``gid``/``mode`` (the new dir's owner and mode, which the step sees) stay in the key."""
    op = irops.replace(op, inputs=())
    ex = op.exec
    if ex is None or not any(m.cache is not None and (m.cache.id != m.target or m.cache.sharing != "shared")
                             for m in ex.mounts):
        return op
    mounts = tuple(irops.replace(m, cache=irops.replace(m.cache, id=m.target, sharing="shared"))
                   if m.cache is not None else m for m in ex.mounts)
    return irops.replace(op, exec=irops.replace(ex, mounts=mounts))


def read_selections(op: irops.Op, index: int) -> list[tuple[str, irops.CopyAction]] | None:
    """What op reads of its input ``index``, when that is only parts of it: one ``("copy",
    action)`` per copy from it, one ``("mount", action)`` per bind or cache-seed mount of a sub-path
    (the mount resolves ``selector`` as a copy that follows symlinks would, and sees the selected
    file or dir with its mode, owner and everything below it).  None: the input counts whole (a
    rootfs, a file op's base, a mount of its root, an output mount)."""
    f, ex = op.file, op.exec
    if f is not None:
        if f.base == index:
            return None
        reads = [("copy", a.copy) for a in f.actions if a.copy is not None and a.copy.src == index]
        return reads or None
    if ex is None:
        return None
    reads = []
    for n, m in enumerate(ex.mounts):
        if m.input != index:
            continue
        whole = posixpath.normpath("/" + m.selector.lstrip("/")) == "/"
        if n == 0 or m.type not in ("bind", "cache") or m.output >= 0 or whole:
            return None
        reads.append(("mount", irops.CopyAction(src=index, src_path=m.selector, dest="/", follow_symlinks=True)))
    return reads or None


# ------------------------------------------------------------------------------------- solver


def _warm_runtime(ws: Workspace) -> None:
    """``ws.find_runtime()`` ahead of the first exec (probing crun costs two process runs); an error
    is left for the exec that needs the runtime to report."""
    if ws.networks is not None:
        ws.networks.prestart()  # the first step's network, while bases are pulled
    try:
        ws.find_runtime()
    except Exception:  # noqa: BLE001 - reported by the first exec
        pass


def _snapshotter_event(name: str) -> Event:
    """Kernel overlayfs is the norm: shown with ``--debug`` only; anything else is worth a line."""
    if name == "overlay":
        return Event("debug", text=f"snapshotter: {name}")
    if os.environ.get("IRCTL_SNAPSHOTTER", "").strip():
        why = "as IRCTL_SNAPSHOTTER asks"
    else:
        why = "kernel overlayfs is not usable here"
    if name == "copy":
        why += "; each step copies its base, which is slower"
    return Event("info", text=f"snapshotter: {name} ({why})")


def _stamp(outs: list[Snapshot], inputs: list[Snapshot], now: int) -> list[Snapshot]:
    """Give each layer of an op's fresh outputs its time: an input's layer keeps the input's time, a
    layer the op made is ``now``.  (A layer the op made whose bytes happen to equal an older layer
    still gets ``now``: the step ran, as BuildKit's new snapshot would.)"""
    known: dict[Path, int | None] = {}
    for snap in inputs:
        known.update(zip(snap.layers, snap.layer_times()))
    return [dataclasses.replace(s, created=tuple(known[p] if p in known else now for p in s.layers))
            if s.host_dir is None else s for s in outs]


class Solver:
    def __init__(self, doc: irops.Document, options: SolveOptions):
        self.doc = doc
        self.options = options
        self.results: dict[str, list[Snapshot]] = {}
        self._emit_lock = threading.Lock()
        self._precompressor = None
        self._image_chain: set[tuple[str, int]] = set()
        self.redactor = Redactor(self.options.secrets.values())

    def emit(self, event: Event) -> None:
        """Hand an event to the renderer with every secret value of the build masked in its text
        (output lines are masked already; this also covers errors and info messages)."""
        if self.options.on_event is not None:
            if self.redactor and event.text and event.kind != "log":  # log lines: masked by backend.output
                event = dataclasses.replace(event, text=self.redactor.text(event.text))
            with self._emit_lock:
                self.options.on_event(event)

    # -- entry --------------------------------------------------------------------------------
    def solve(self, targets: list[str]) -> dict[str, Snapshot]:
        errors = check_graph(self.doc)
        if errors:
            raise ValidationErrors(errors) if len(errors) > 1 else errors[0]
        for t in targets:
            if t not in self.doc.roots:
                raise SolveError(f"no target {t!r} in the graph (targets: {', '.join(sorted(self.doc.roots))})")
        deps = self._reachable([self.doc.roots[t].op for t in targets])
        self._check_grants(deps)
        store = CacheStore(default_root(self.options.cache_dir), reap_runtime_dir=reap_dead_build)
        from backend.ops import mounts as mnt
        from backend.oci.pull import ImageResolver
        from backend.snapshot.detect import detect_snapshotter

        record = self.options.record
        if record is not None:
            try:
                record.open(store.root)
                record.no_cache = self.options.no_cache
            except OSError:  # an unwritable record never fails a build
                self.options.record = record = None
        with store.session() as work:
            state_dir = mnt.secret_dir()
            Path(f"{work}.state").write_text(str(state_dir))  # so a later build can reap it if we die
            images = ImageResolver(store, insecure=tuple(self.options.insecure_registries), emit=self.emit)
            try:
                snapshotter = detect_snapshotter(store.tmp_dir, probe_dir=work, memo=store.root / "snapshotter.probe")
                ws = Workspace(store=store, work=work, state_dir=state_dir, snapshotter=snapshotter,
                               options=self.options, images=images, emit=self.emit, cancel=threading.Event(),
                               redactor=self.redactor,
                               exec_slots=threading.Semaphore(max(1, self.options.jobs)))
                self.emit(_snapshotter_event(snapshotter.name))
                self.ws = ws
                if any(self._network(d) == "default" for d in deps):
                    from backend.runtime.netns import NetworkPool

                    ws.networks = NetworkPool()
                warm = None
                if any(self.doc.ops[d].exec is not None for d in deps):
                    # find (and probe) the OCI runtime while the first steps pull and extract their bases
                    warm = threading.Thread(target=_warm_runtime, args=(ws,), name="find-runtime", daemon=True)
                    warm.start()
                cost = {"exec": 10.0, "file": 2.0, "diff": 2.0}
                prio = critical_path(deps, lambda d: cost.get(self.doc.ops[d].kind, 0.1))
                if self.options.precompress:
                    from backend.oci.precompress import Precompressor, image_chain

                    self._image_chain = image_chain(self.doc, [self.doc.roots[t] for t in targets])
                    self._precompressor = Precompressor(store.root, tuple(self.options.precompress), self.emit)
                solved = False
                try:
                    run_dag(deps, self._task, priority=prio, cancel=ws.cancel,
                            workers=max(32, 2 * self.options.jobs))
                    solved = True
                finally:
                    if warm is not None:
                        warm.join()
                    if self._precompressor is not None:
                        self._precompressor.close(ok=solved)
                out = {}
                for t in targets:
                    ref = self.doc.roots[t]
                    snap = self.results[ref.op][ref.output]
                    out[t] = self._known_times(self._materialize(snap) if self.options.materialize else snap)
                if record is not None:
                    with contextlib.suppress(OSError):
                        record.save()
                return out
            finally:
                images.close()
                ws_ = getattr(self, "ws", None)
                if ws_ is not None and ws_.networks is not None:
                    ws_.networks.close()
                if ws_ is not None:
                    from backend.runtime.container import finish_deferred

                    finish_deferred(ws_.deferred)  # runtime state lives in state_dir
                safefs.rmtree(state_dir, ignore_errors=True)

    def _reachable(self, roots: list[str]) -> dict[str, list[str]]:
        deps: dict[str, list[str]] = {}
        stack = list(roots)
        while stack:
            d = stack.pop()
            if d in deps:
                continue
            deps[d] = sorted({r.op for r in self.doc.ops[d].inputs})
            stack.extend(deps[d])
        return deps

    def _network(self, digest: str) -> str | None:
        """The network an exec op runs with: its own mode, or ``--network`` for ``default``."""
        ex = self.doc.ops[digest].exec
        if ex is None:
            return None
        return ex.network if ex.network != "default" else self.options.network

    def _check_grants(self, deps: dict[str, list[str]]) -> None:
        """Refuse, before anything runs, a graph that wants what the user did not grant (all at once)."""
        from backend.ops.source import check_grants

        problems: list[str] = []
        for d in sorted(deps):
            op = self.doc.ops[d]
            where = self._where(d)
            if op.source is not None:
                try:
                    check_grants(op.source, self.options, where)
                except GrantError as e:
                    problems.append(str(e))
            if op.exec is None:
                continue
            network = self._network(d)
            if network == "host" and not self.options.entitlements.network_host:
                how = ("the step asks for network=host" if op.exec.network == "host"
                       else "--network host gives the step")
                problems.append(f"{where}: {how} (the host's network namespace), which was not allowed; "
                                "pass --allow network.host")
            if op.exec.security == "insecure" and not self.options.entitlements.insecure:
                problems.append(f"{where}: the step asks for security=insecure (all capabilities), which was not "
                                "allowed; pass --allow security.insecure")
            for m in op.exec.mounts:
                if m.secret is not None and m.secret.required and m.secret.id not in self.options.secrets:
                    problems.append(f"{where}: secret {m.secret.id!r} is required but was not given "
                                    f"(pass --secret id={m.secret.id},src=FILE or env=VAR)")
                if m.type == "ssh" and m.ssh is not None and m.ssh.required and m.ssh.id not in self.options.ssh:
                    problems.append(f"{where}: ssh agent {m.ssh.id!r} is required but was not given "
                                    f"(pass --ssh {m.ssh.id}=SOCKET, or --ssh default with $SSH_AUTH_SOCK set)")
        if problems:
            raise GrantError("\n".join(dict.fromkeys(problems)))

    def _where(self, digest: str) -> str:
        desc, _ = describe(self.doc, digest)
        loc = source_location(self.doc, digest, 0).split("\n", 1)[0]
        return f"{loc}: {desc}" if loc else desc

    # -- one op -------------------------------------------------------------------------------
    def _task(self, digest: str) -> None:
        op = self.doc.ops[digest]
        inputs = [self.results[r.op][r.output] for r in op.inputs]
        desc, group = describe(self.doc, digest)
        step = Step(self.ws, digest, desc, group)
        try:
            with step.resources:
                self.results[digest] = self._solve_op(step, op, inputs)
        except BuildError as e:
            if self.ws.cancel.is_set() and e.exit_code is not None and e.exit_code >= 128:
                raise  # killed because a sibling failed
            message = self.redactor.text(e.message)
            step.event("failed", message, time.monotonic() - step.started)
            raise BuildError(message, op=digest, description=desc, location=source_location(self.doc, digest),
                             output_tail=e.output_tail, exit_code=e.exit_code) from None
        except Exception as e:
            from backend.runtime.container import Cancelled

            if isinstance(e, (GrantError, Cancelled)):
                raise
            msg = self.redactor.text(
                str(e) if isinstance(e, (SolveError, safefs.TreeError)) else
                f"{type(e).__name__}: {safefs.os_error_text(e)}" if isinstance(e, OSError) else
                f"{type(e).__name__}: {e}")
            step.event("failed", msg, time.monotonic() - step.started)
            raise BuildError(msg, op=digest, description=desc,
                             location=source_location(self.doc, digest)) from (None if isinstance(e, SolveError) else e)

    def _precompress(self, digest: str, inputs: list[Snapshot], outs: list[Snapshot]) -> None:
        """Hand the layers this op just made, on an output the target's image is made of, to the
        background compressor (``backend.oci.precompress``)."""
        had = {p for s in inputs for p in s.layers}
        for i, snap in enumerate(outs):
            if (digest, i) in self._image_chain and snap.host_dir is None:
                self._precompressor.submit(p for p in snap.layers if p not in had)  # type: ignore[union-attr]

    def _solve_op(self, step: Step, op: irops.Op, inputs: list[Snapshot]) -> list[Snapshot]:
        from backend.ops import source

        ws = self.ws
        if op.source is not None and not source.is_fetched(op.source):
            snap = source.resolve_source(ws, step, op.source)
            if all(p.is_dir() for p in snap.layers):
                step.event("cached", "resolved")
            else:  # layers still to pull: their progress comes under this op when a step needs them
                step.event("finished", "resolved", time.monotonic() - step.started)
            self._note(step, op, "resolved", identities=[snap.identity])
            return [snap]
        extra = ""
        if op.exec is not None and op.exec.network == "default" and self.options.network != "default":
            # `--network none|host` changes what such a step sees, as its own RUN --network= would
            extra = f"network={self.options.network}"
        parts: list = []
        if op.source is not None:
            fetched = source.fetch_key_extra(op.source, self.options)
            extra = fetched or ""
            key = None if fetched is None else self._key(op, inputs, fetched, parts=parts)
        else:
            key = self._key(op, inputs, extra, step, parts)
        if key is not None and not self.options.no_cache:
            hit = ws.store.lookup(key)
            if hit is not None:
                step.event("cached")
                self._note(step, op, "cached", key or "", parts, extra, [o.identity for o in hit])
                return [self._from_output(o) for o in hit]
        self._note(step, op, "ran", key or "", parts, extra)  # (noted before it runs: a failed step is explained too)
        if op.kind != "exec":
            step.event("started")
        step.started = time.monotonic()
        outs = _stamp(self._run(step, op, inputs), inputs, time.time_ns())
        if key is not None:
            ws.store.record(key, [self._to_output(s) for s in outs])
        if self._precompressor is not None:  # (a cache hit's layers are left to the export: a cheap
            self._precompress(step.digest, inputs, outs)  # lookup there, most often already stored)
        self._note(step, op, "ran", key or "", parts, extra, [s.identity for s in outs])
        step.event("finished", duration=time.monotonic() - step.started)
        return outs

    def _note(self, step: Step, op: irops.Op, status: str, key: str = "", parts: list | None = None,
              extra: str = "", identities: list[str] | None = None) -> None:
        """Tell the build record (if any) what this step's key was made of."""
        record = self.options.record
        if record is None:
            return
        inputs = [(ref.op, ref.output, part) for ref, part in zip(op.inputs, parts or ())]
        record.note(step.digest, op, key_body(op), self.redactor.text(step.description), step.group, status,
                    key, inputs, extra, identities)

    def _run(self, step: Step, op: irops.Op, inputs: list[Snapshot]) -> list[Snapshot]:
        ws = self.ws
        if op.exec is not None:
            from backend.ops.exec import run_exec

            n = max((m.output for m in op.exec.mounts), default=-1) + 1
            return run_exec(ws, step, op.exec, inputs, n)
        if op.file is not None:
            from backend.ops.file import run_file

            return [run_file(ws, step, op.file, inputs)]
        if op.merge is not None:
            from backend.ops.merge import run_merge

            return [run_merge(ws, step, inputs)]
        if op.diff is not None:
            from backend.ops.merge import run_diff

            return [run_diff(ws, step, inputs[0], inputs[1])]
        if op.image is not None:
            from backend.ops.image import run_image

            return [run_image(op.image, inputs[0])]
        from backend.ops.source import fetch_source

        return [fetch_source(ws, step, op.source)]  # type: ignore[arg-type]

    # -- keys ---------------------------------------------------------------------------------
    def _key(self, op: irops.Op, inputs: list[Snapshot], extra: str, step: Step | None = None,
             parts: list | None = None) -> str:
        """The cache key; ``parts`` receives what each input contributed (for the build record)."""
        h = hashlib.sha256(b"irctl-cache-key-v1\0")
        h.update(canonical_bytes(key_body(op)))
        for i, (ref, snap) in enumerate(zip(op.inputs, inputs)):
            part = self._input_identity(op, i, snap, step)
            h.update(b"\0input\0" + part.encode())
            if parts is not None:
                parts.append(part)
        h.update(b"\0extra\0" + extra.encode())
        return "sha256:" + h.hexdigest()

    def _input_identity(self, op: irops.Op, index: int, snap: Snapshot, step: Step | None = None) -> str:
        """The identity an input contributes.  An input an op only reads part of contributes the
        checksum of exactly that part (``read_selections``): from a local context's scan, or (for
        another stage) from a read-only view of its layers, remembered per (identity, selection) so
        a cached rebuild mounts nothing.  So ``COPY --from=build /out/app`` and
        ``RUN --mount=type=bind,from=build,source=/out/app`` stay cached when the build stage re-ran
        but produced the same ``/out/app`` (early cutoff across stages)."""
        reads = read_selections(op, index)
        if reads is None:
            if snap.host_dir is not None and self.options.record is not None:
                self._context_listing(snap)
            return snap.identity
        digests = []
        for kind, c in reads:  # a pure function of (identity, selection): remembered, as walking it is not free
            # ("sel2": memos made before a selection counted xattrs and device numbers are not reused)
            tag = b"sel2\0" + (b"mount\0" if kind == "mount" else b"")
            action = hashlib.sha256(tag + canonical_bytes(c)).hexdigest()
            found = self.ws.store.selection(snap.identity, action)
            if found is None:
                found = self._selection_digest(snap, c, step, missing_ok=kind == "mount")
                self.ws.store.record_selection(snap.identity, action, found)
            digests.append(found)
        return "selection:" + ",".join(digests)

    def _selection_digest(self, snap: Snapshot, c: irops.CopyAction, step: Step | None, missing_ok: bool) -> str:
        from backend.fs.copy import FileOpError
        from backend.ops.file import layered_selection_digest, selection_digest

        record = self.options.record
        listing = record.new_listing() if record is not None else None
        try:
            if snap.host_dir is not None:  # from the context's scan: no I/O, but 20,000 files take 0.3 s
                found = selection_digest(self.ws, snap, c, listing)
            else:
                found = layered_selection_digest(self.ws, snap, c, step, listing)  # a copy reuses step's view
            if record is not None:
                with contextlib.suppress(OSError):
                    record.save_listing(found, listing)
            return found
        except FileOpError as e:
            if not missing_ok:
                raise
            # a mount of a path that is not there: the mount itself reports it when the step runs
            return "missing:" + hashlib.sha256(str(e).encode("utf-8", "surrogateescape")).hexdigest()

    def _context_listing(self, snap: Snapshot) -> None:
        """Keep the file list of a local context a step reads whole, for ``--explain``."""
        record = self.options.record
        if record.has_listing(snap.identity):  # type: ignore[union-attr]
            return
        found = self.ws.scans.get(snap.identity)
        if found is None or len(found.entries) > record.MAX_LISTING:  # type: ignore[attr-defined,union-attr]
            return
        entries = record.new_listing()  # type: ignore[union-attr]
        for rel, e in found.entries.items():  # type: ignore[attr-defined]
            line = f"{e.type}\0{e.mode:o}\0{e.target}\0{e.digest}".encode("utf-8", "surrogateescape")
            entries.append((rel, hashlib.sha256(line).hexdigest()[:16]))
        with contextlib.suppress(OSError):
            record.save_listing(snap.identity, entries)  # type: ignore[union-attr]

    # -- snapshots <-> index rows --------------------------------------------------------------
    def _to_output(self, snap: Snapshot) -> Output:
        if snap.host_dir is not None:
            ids = [self.ws.local_layer(snap)]
        else:
            ids = [layer_id_of(p) for p in snap.layers]
        image = dataclasses.asdict(snap.image) if snap.image is not None else None
        if image is not None:
            image["history"] = list(image["history"])
        created = snap.layer_times() if snap.host_dir is None else (None,)
        return Output(snap.identity, tuple(ids), image, created if any(t is not None for t in created) else ())

    def _from_output(self, o: Output) -> Snapshot:
        image = None
        if o.image is not None:
            image = ImageMeta(config=o.image["config"], history=tuple(o.image.get("history") or ()),
                              platform=o.image.get("platform") or {})
        return Snapshot(identity=o.identity, layers=tuple(self.ws.store.layer_path(i) for i in o.layers), image=image,
                        created=o.created)

    def _known_times(self, snap: Snapshot) -> Snapshot:
        """``snap`` with a time for every layer: where no result recorded one (a base image's layers, a
        cache from an older irctl) the layer's first commit to the store, which does not move either."""
        times = snap.layer_times()
        if all(t is not None for t in times):
            return snap
        ids = [layer_id_of(p) for p in snap.layers]
        first = self.ws.store.layer_times([i for i, t in zip(ids, times) if t is None])
        return dataclasses.replace(snap, created=tuple(t if t is not None else first.get(i) for i, t in zip(ids, times)))

    def _materialize(self, snap: Snapshot) -> Snapshot:
        if snap.host_dir is not None:
            lid = self.ws.local_layer(snap)
            return Snapshot(identity=snap.identity, layers=(self.ws.store.layer_path(lid),), image=snap.image)
        self.ws.lowers(snap)
        return snap
