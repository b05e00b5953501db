"""What the op handlers share: the ``Workspace`` of one solve and the ``Step`` of one op.

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
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from backend.events import Event
from backend.fs import devnodes, safefs
from backend.fileops.context import ContextScan, StatCache, scan_context
from backend.output import Redactor
from backend.result import ImageMeta, Snapshot
from backend.runtime.executor import Executor
from backend.snapshot.base import Snapshotter
from backend.snapshot.layertree import layer_tree_digest
from backend.store.cache import CacheStore

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
    """Everything one solve shares: the store, its private work dir, snapshotter, executor, grants."""

    store: CacheStore
    work: Path  # this session's dir under the store's tmp/
    state_dir: Path  # runtime bundles and state: on a tmpfs, removed after the solve
    snapshotter: Snapshotter
    options: object  # backend.solve.solver.SolveOptions
    images: object  # backend.oci.pull.ImageResolver
    emit: Callable[[Event], None]
    cancel: threading.Event
    exec_slots: threading.Semaphore
    executor: Executor  # runs exec steps' processes (backend.runtime.executor)
    redactor: Redactor = field(default_factory=Redactor)  # every secret value of the build
    remote: object = None  # the shared caches results may come from (backend.remotecache.sources.RemoteCache)
    scans: dict[str, ContextScan] = field(default_factory=dict)  # context identity -> its scan
    _local_layers: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def temp_dir(self, prefix: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.work))

    # -- local contexts ---------------------------------------------------------------------
    def scan(self, root: Path, include: tuple[str, ...], exclude: tuple[str, ...]) -> ContextScan:
        """Scan a local context (stat cache in the store: unchanged files are not re-read)."""
        with StatCache(self.store.root / "contexts.db") as cache:
            result = scan_context(root, include, exclude, stat_cache=cache)
        self.scans[result.identity] = result
        return result

    def context_scan(self, snap: Snapshot) -> ContextScan:
        """The scan of the local context ``snap`` (this build's, or a new one)."""
        found = self.scans.get(snap.identity)
        if found is None:
            found = self.scan(Path(snap.host_dir), snap.include, snap.exclude)  # type: ignore[arg-type]
        return found

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
        self.images.ensure_layers([layer_id_of(p) for p in snap.layers if not p.is_dir()])  # type: ignore[attr-defined]
        return list(snap.layers)

    def local_layer(self, snap: Snapshot) -> str:
        """A local context copied (with its filters) into a committed layer, once per identity."""
        with self._lock:
            known = self._local_layers.get(snap.identity)
        if known and self.store.has_layer(known):
            return known
        upper = self.temp_dir("ctx-") / "layer"
        copy_context(self.context_scan(snap), upper)
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


def copy_context(found: ContextScan, dest: Path) -> None:
    """Copy a local context, as its filters show it and owned by 0:0, into the plain dir ``dest``."""
    root = Path(found.root)
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, found.root_mode)
    for rel in sorted(found.entries, key=os.fsencode):
        e = found.entries[rel]
        src, dst = root / rel, dest / rel
        if e.type == "dir":
            dst.mkdir(exist_ok=True)
            os.chmod(dst, e.mode)
        elif e.type == "symlink":
            os.symlink(e.target, dst)
        elif e.type == "file":
            shutil.copy2(src, dst)
        else:
            continue
        os.lchown(dst, 0, 0)


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
