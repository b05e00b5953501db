"""Op handlers and what they share: the ``Workspace`` of one solve and the ``Step`` of one op.

A handler receives the snapshots of its inputs (``backend.result.Snapshot``) and returns the
snapshots of its outputs.  Layers are named by id (``sha256:<hex>``; the dir is ``layers/<hex>``):
a layer we build is named by its ``layer_tree_digest``, a pulled one by its diff_id.  A snapshot's
identity is content-based: sha256 over its layer ids, so two ways of making the same files agree,
and everything downstream of an op that re-ran but produced the same files is a cache hit.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from backend.store.cache import CacheStore
from backend.events import Event
from backend.output import Redactor
from backend.result import ImageMeta, Snapshot
from backend.snapshot.base import Snapshotter
from backend.snapshot.layertree import layer_tree_digest
from backend.fs import devnodes, safefs

EMPTY_IDENTITY = "sha256:" + hashlib.sha256(b"irctl-layers-v1\0").hexdigest()


def layers_identity(layer_ids: list[str] | tuple[str, ...]) -> str:
    """Identity of a filesystem made of these layers, bottom first (no layers: the empty tree)."""
    h = hashlib.sha256(b"irctl-layers-v1\0")
    for lid in layer_ids:
        h.update(lid.encode() + b"\n")
    return "sha256:" + h.hexdigest()


def layer_id_of(path: Path) -> str:
    return "sha256:" + Path(path).name


@dataclass
class Workspace:
    """Everything one solve shares: the store, its private work dir, snapshotter, runtime, grants."""

    store: CacheStore
    work: Path  # this session's dir under the store's tmp/
    state_dir: Path  # runtime bundles and state: on a tmpfs, removed after the solve
    snapshotter: Snapshotter
    options: object  # backend.solve.solver.SolveOptions
    images: object  # backend.oci.pull.ImageResolver
    emit: Callable[[Event], None]
    cancel: threading.Event
    exec_slots: threading.Semaphore
    runtime: object = None  # backend.runtime.container.Runtime, found on first exec
    redactor: Redactor = field(default_factory=Redactor)  # every secret value of the build
    scans: dict[str, object] = field(default_factory=dict)  # context identity -> backend.fs.context.ContextScan
    deferred: list = field(default_factory=list)  # runtime deletes still running (backend.runtime.container.finish_deferred)
    networks: object = None  # backend.runtime.netns.NetworkPool when some step has the default (private) network
    _local_layers: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def temp_dir(self, prefix: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.work))

    def find_runtime(self):
        with self._lock:
            if self.runtime is None:
                from backend.runtime.container import find_runtime

                self.runtime = find_runtime(memo=self.store.root / "runtime.probe", scratch=self.work)
            return self.runtime

    # -- layers -------------------------------------------------------------------------------
    def commit(self, upper: Path, known: dict | None = None) -> str | None:
        """Commit a finished upper dir as a layer; None when it changes nothing.  ``known``: content
        digests noted while writing it (see ``layer_tree_digest``)."""
        if not any(os.scandir(upper)):
            safefs.rmtree(upper, ignore_errors=True)
            return None
        devnodes.convert_tree(upper)  # no device node is ever stored (backend.fs.devnodes)
        lid = layer_tree_digest(upper, known)
        self.store.commit_layer(upper, lid)
        return lid

    def lowers(self, snap: Snapshot) -> list[Path]:
        """Layer dirs of ``snap``, bottom first: pulled layers are extracted now, a local context
        becomes one layer (a filtered copy)."""
        if snap.host_dir is not None:
            return [self.store.layer_path(self.local_layer(snap))]
        out = []
        for p in snap.layers:
            if not p.is_dir():
                self.images.ensure_layer(layer_id_of(p))  # type: ignore[attr-defined]
            out.append(p)
        return out

    def local_layer(self, snap: Snapshot) -> str:
        """A local context copied (with its filters) into a committed layer, once per identity."""
        with self._lock:
            known = self._local_layers.get(snap.identity)
        if known and self.store.has_layer(known):
            return known
        from backend.ops.file import copy_context

        upper = self.temp_dir("ctx-") / "layer"
        copy_context(self, snap, upper)
        lid = self.commit(upper) or ""
        if not lid:  # an empty context: an empty layer dir still gives overlay a lower
            empty = self.temp_dir("ctx-") / "layer"
            empty.mkdir()
            lid = layer_tree_digest(empty)
            self.store.commit_layer(empty, lid)
        with self._lock:
            self._local_layers[snap.identity] = lid
        return lid

    def snapshot(self, layer_ids: list[str], image: ImageMeta | None = None, identity: str = "") -> Snapshot:
        return Snapshot(identity=identity or layers_identity(layer_ids),
                        layers=tuple(self.store.layer_path(i) for i in layer_ids), image=image)


@dataclass
class Step:
    """One op being executed: emits its log lines and info events with its name attached."""

    ws: Workspace
    digest: str
    description: str
    group: str
    started: float = field(default_factory=time.monotonic)
    # what the step holds until it ends (read-only views of its inputs: backend.ops.file.readonly_view)
    resources: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    views: dict[str, Path] = field(default_factory=dict)

    def event(self, kind: str, text: str = "", duration: float = 0.0) -> None:
        self.ws.emit(Event(kind, self.digest, self.description, self.group, text, duration))  # type: ignore[arg-type]

    def log(self, line: str) -> None:
        self.event("log", line)

    def info(self, text: str) -> None:
        self.event("info", text)
