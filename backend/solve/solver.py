"""Solve an IR document: run what the targets need, reuse what the cache already has.

Each op is one task for the scheduler (``backend.solve.task``): its handler (``backend.ops.registry``)
says what goes into its cache key and how it runs; the task looks the key up and only on a miss runs
the handler.  So a fully cached rebuild mounts and executes nothing, and when an op re-runs but
produces the same files, everything after it is a hit again (early cutoff).  This module sets a
solve up: checks the graph and every grant before anything runs, opens the store, picks the
snapshotter and the executor, and hands the ops to the scheduler, longest path first.

The graph reaches the host only through ``SolveOptions`` grants (local dirs, OCI layouts, secrets,
ssh agents, ``entitlements``); secrets are never part of a key, a log line or a file in the store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ir import ops as irops
from ir.errors import ValidationErrors
from ir.validate import check_graph

from backend.entitlements import Entitlements
from backend.errors import GrantError, SolveError
from backend.events import Event
from backend.farm import FarmOptions
from backend.fs import safefs
from backend.oci.layout import Platform
from backend.oci.precompress import Precompressor, image_chain
from backend.oci.pull import ImageResolver, LayerUnavailable
from backend.ops.handler import OpHandler
from backend.ops.mounts import secret_dir
from backend.ops.registry import handler_for
from backend.ops.workspace import Workspace
from backend.output import Redactor
from backend.remotecache.ledger import CacheLedger
from backend.remotecache.sources import RemoteCache, load
from backend.result import Snapshot
from backend.runtime.container import Cancelled, reap_dead_build
from backend.runtime.executor import Executor, OCIExecutor
from backend.snapshot.detect import detect_snapshotter
from backend.solve.locations import where
from backend.solve.results import known_times, materialize
from backend.solve.scheduler import critical_path, run_dag
from backend.solve.task import OpTask
from backend.store.cache import CacheStore, default_root

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
    # --no-cache-filter: steps whose progress group (``OpMetadata.group``: a Dockerfile's stage name) is
    # here run again; steps after them still hit the cache when their inputs' contents did not change
    no_cache_groups: frozenset[str] = frozenset()
    entitlements: Entitlements = field(default_factory=Entitlements)  # --allow
    network: str = "default"  # --network: what a step with `network: default` gets (default | none | host)
    insecure_registries: tuple[str, ...] = ()
    on_event: Callable[[Event], None] | None = None
    # unfiltered scans (backend.fileops.context.ContextScan) of granted dirs by realpath, taken by this build
    # just before (the CLI's fast-path check): reused for sources without include/exclude patterns
    context_scans: dict[str, object] = field(default_factory=dict)
    materialize: bool = True  # make sure every layer of the returned snapshots exists as a dir
    # what each step's key was made of, saved for the next build's --explain (backend.solve.buildrecord)
    record: object = None
    # how the export will compress layers (backend.oci.precompress): the target image's new layers are
    # compressed that way in the background as their steps commit them; () compresses nothing early
    precompress: tuple = ()
    # what runs exec steps' processes (backend.runtime.executor.Executor); None: runc or crun
    executor: Executor | None = None
    # shared caches to take results from (--cache-from: backend.remotecache.options.CacheImport), and
    # what to note for --cache-to (backend.remotecache.ledger.CacheLedger)
    cache_from: tuple = ()
    ledger: CacheLedger | None = None
    # --on-error=shell: a shell in the first failed RUN step's container (backend.ops.debugshell.DebugShell)
    debug_shell: object = None
    # a REAPI server: its action cache as a shared cache (--remote-cache), remote execution (--remote)
    farm: FarmOptions | None = None


def solve(doc: irops.Document, targets: list[str] | None = None, options: SolveOptions | None = None
          ) -> dict[str, Snapshot]:
    """Build ``targets`` (root names; default ``["default"]``) and return their snapshots."""
    return Solver(doc, options or SolveOptions()).solve(targets or ["default"])


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


class _Background:
    """``fn`` in a thread of its own, started by the first ``start()`` (from any thread; later calls
    do nothing); ``join()`` waits for it if it was started."""

    def __init__(self, fn, name: str) -> None:
        self._thread = threading.Thread(target=fn, name=name, daemon=True)
        self._lock = threading.Lock()
        self._started = False

    def start(self) -> None:
        with self._lock:
            if not self._started:
                self._started = True
                self._thread.start()

    def join(self) -> None:
        with self._lock:
            started = self._started
        if started:
            self._thread.join()


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


class Solver:
    def __init__(self, doc: irops.Document, options: SolveOptions):
        self.doc = doc
        self.options = options
        self._emit_lock = threading.Lock()
        self.redactor = Redactor(self.options.secrets.values())

    def emit(self, event: Event) -> None:
        """Hand an event to the renderer with every secret value of the build masked in its text
        (output lines are masked already; this also covers errors and info messages)."""
        if self.options.on_event is not None:
            if self.redactor and event.text and event.kind != "log":  # log lines: masked by backend.output
                event = dataclasses.replace(event, text=self.redactor.text(event.text))
            with self._emit_lock:
                self.options.on_event(event)

    def solve(self, targets: list[str]) -> dict[str, Snapshot]:
        errors = check_graph(self.doc)
        if errors:
            raise ValidationErrors(errors) if len(errors) > 1 else errors[0]
        for t in targets:
            if t not in self.doc.roots:
                raise SolveError(f"no target {t!r} in the graph (targets: {', '.join(sorted(self.doc.roots))})")
        deps = self._reachable([self.doc.roots[t].op for t in targets])
        handlers = {d: handler_for(self.doc.ops[d]) for d in deps}
        self._check_grants(handlers)
        store = CacheStore(default_root(self.options.cache_dir), reap_runtime_dir=reap_dead_build)
        record = self.options.record
        if record is not None:
            try:
                record.open(store.root)
                record.no_cache = self.options.no_cache
                record.no_cache_groups = self.options.no_cache_groups
            except OSError:  # an unwritable record never fails a build
                self.options.record = record = None
        farm = self._remote_execution()
        # the processes this machine runs: none when every exec step goes to the farm (no runtime is
        # even looked for, so a client needs none)
        networks = [n for h in handlers.values() if (n := h.network(self.options)) is not None
                    and (farm is None or farm.why_local(h, self.options) is not None)]
        with contextlib.ExitStack() as stack, store.session() as work:
            if farm is not None:
                stack.callback(farm.close)
            state_dir = secret_dir()
            Path(f"{work}.state").write_text(str(state_dir))  # so a later build can reap it if we die
            images = ImageResolver(store, insecure=tuple(self.options.insecure_registries), emit=self.emit)
            executor = self.options.executor or OCIExecutor(
                state_dir, memo=store.root / "runtime.probe", scratch=work, private_network="default" in networks)
            ws = None
            try:
                snapshotter = detect_snapshotter(store.tmp_dir, probe_dir=work, memo=store.root / "snapshotter.probe")
                ws = Workspace(store=store, work=work, state_dir=state_dir, snapshotter=snapshotter,
                               options=self.options, images=images, emit=self.emit, cancel=threading.Event(),
                               redactor=self.redactor, executor=executor,
                               exec_slots=threading.Semaphore(max(1, self.options.jobs)))
                ws.remote = self._shared_caches(ws)
                if farm is not None:
                    farm.share(ws.remote)
                self.emit(_snapshotter_event(snapshotter.name))
                return self._run(targets, deps, handlers, ws, bool(networks), farm)
            finally:
                if ws is not None and ws.remote:
                    interrupted = isinstance(sys.exc_info()[1], KeyboardInterrupt)  # (Ctrl-C: queued ones dropped)
                    for source in [*ws.remote.live, *ws.remote.keeping]:  # uploads joined, servers let go
                        source.close(interrupted=interrupted)
                images.close()
                executor.close()  # runtime state lives in state_dir
                safefs.rmtree(state_dir, ignore_errors=True)

    def _shared_caches(self, ws: Workspace) -> RemoteCache | None:
        """The ``--cache-from`` caches that can be read (the others are warned about), their layers
        and cache mounts made known to the image resolver, then the ``--remote-cache`` server if it
        can serve (``backend.farm.cache``); None without either."""
        farm = self.options.farm
        if not self.options.cache_from and (farm is None or farm.cache is None):
            return None
        images = ws.images
        remote = load(self.options.cache_from, client=images.client, platform=Platform.host(),
                      warn=lambda text: self.emit(Event("info", text=text)))
        if farm is not None and farm.cache is not None:
            from backend.farm.cache import connect  # lazy: grpc (~0.1 s to import) only with --remote-cache

            found = connect(farm, ws, self.emit)
            remote.live += [found] if found is not None else []
        for c in remote.caches:
            images.add_remote(c.config.layers, c.config.mounts, c.origin)
            self.emit(Event("info", text=f"cache {c.name}: {len(c.config.records)} results, {len(c.config.layers)} "
                                         f"layers, {len(c.config.mounts)} cache mounts"))
        return remote

    def _remote_execution(self):
        """``--remote``: the server's Execute service, checked before anything runs; None without."""
        farm = getattr(self.options, "farm", None)
        if farm is None or farm.execute is None:
            return None
        from backend.farm.execute import RemoteExecution  # lazy: grpc (~0.1 s to import) only for
        from backend.reapi.client import Remote  # lazy: a build that uses a farm

        return RemoteExecution.connect(Remote(farm.execute), farm.execute.url, farm.source_date_epoch)

    def _run(self, targets: list[str], deps: dict[str, list[str]], handlers: dict[str, OpHandler], ws: Workspace,
             processes: bool, farm=None) -> dict[str, Snapshot]:
        # find (and probe) the OCI runtime while the first steps pull and extract their bases; not
        # before a step misses: a build its caches answer whole runs no process (and on a new CI
        # runner, probing the runtime and starting a network are processes on its few cores)
        warm = _Background(ws.executor.warm, "find-runtime") if processes else None
        prio = critical_path(deps, lambda d: handlers[d].cost)
        precompressor, chain = None, set()
        if self.options.precompress:
            chain = image_chain(self.doc, [self.doc.roots[t] for t in targets])
            precompressor = Precompressor(ws.store.root, tuple(self.options.precompress), self.emit)
        roots = {self.doc.roots[t].op for t in targets}
        key_only = bool(ws.remote)
        solved = False
        try:
            while True:
                task = OpTask(self.doc, handlers, self.options, ws, self.redactor, precompressor, chain,
                              key_only=key_only, targets=roots, before_run=warm.start if warm else None, farm=farm)
                try:
                    run_dag(deps, task, priority=prio, cancel=ws.cancel, workers=max(32, 2 * self.options.jobs),
                            consequences=(Cancelled,))
                    out = {t: self._result(ws, task, t) for t in targets}
                    break
                except LayerUnavailable as e:
                    key_only = self._without(ws, e, key_only)
            self._imported(ws, task)
            if self.options.ledger is not None:
                self.options.ledger.remote_mounts = ws.images.remote_mounts()
            solved = True
        finally:
            if warm is not None:
                warm.join()
            if precompressor is not None:
                precompressor.close(ok=solved)
        if self.options.record is not None:
            with contextlib.suppress(OSError):
                self.options.record.save()
        return out

    def _result(self, ws: Workspace, task: OpTask, target: str) -> Snapshot:
        ref = self.doc.roots[target]
        snap = task.results[ref.op][ref.output]
        return known_times(ws, materialize(ws, snap) if self.options.materialize else snap)

    def _without(self, ws: Workspace, e: LayerUnavailable, key_only: bool) -> bool:
        """After a shared cache failed the solve: leave that cache out (or, when it was a result it
        holds by key only, such results) and say so; returns whether hits by key stay allowed.  What
        already ran is in the store: the next round finds it there."""
        remote = ws.remote
        if not isinstance(remote, RemoteCache):
            raise e
        dropped = remote.drop(e.origin) if e.origin is not None else None
        if dropped is not None:
            ws.images.forget_remote(dropped.origin)
            for c in remote.caches:  # what the dropped cache named first, the next one to name it supplies
                ws.images.add_remote(c.config.layers, c.config.mounts, c.origin)
            self.emit(Event("info", text=f"warning: {dropped.flag} {dropped.name}: {e}; building on without it"))
        elif key_only:
            self.emit(Event("info", text="a step needs the files of a result a shared cache holds only by key "
                                         "(mode=min); building it again"))
            key_only = False
        else:
            raise SolveError(str(e))
        if self.options.ledger is not None:
            self.options.ledger.reset()
        ws.cancel.clear()
        return key_only

    def _imported(self, ws: Workspace, task: OpTask) -> None:
        """Progress: what the shared caches gave this build."""
        for name, n in task.imported.items():
            self.emit(Event("info", text=f"cache {name}: {n} steps imported"))
        if ws.images.remote_bytes:  # type: ignore[attr-defined]
            self.emit(Event("info", text=f"shared caches: {_mb(ws.images.remote_bytes)} of layers fetched"))  # type: ignore[attr-defined]

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

    def _check_grants(self, handlers: dict[str, OpHandler]) -> None:
        """Refuse, before anything runs, a graph that wants what the user did not grant (all at once)."""
        problems = [p for d in sorted(handlers) for p in handlers[d].grant_problems(self.options, where(self.doc, d))]
        if problems:
            raise GrantError("\n".join(dict.fromkeys(problems)))
