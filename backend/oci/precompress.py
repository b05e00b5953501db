"""Compress the target image's new layers while the build goes on, so the export finds them stored.

An export compresses every new layer after the solve; on a cold build of a real project that is
seconds of gzip at the end (a 300 MB ``apt-get`` layer), while the steps after it mostly wait on the
network.  So the solver hands each layer an op on the target's rootfs chain (:func:`image_chain`)
has just committed to one background worker, which stores it exactly as the exporter would
(``write_layer_to_store`` with the same compression, level, SOURCE_DATE_EPOCH and diff_id hint: the
same bytes); the exporter then finds the blob, or waits on the layer's lock for the one under way.

Bounds: one worker (gzip itself uses the cores, and steps come first: the worker thread is reniced,
which on Linux is per thread and inherited by the gzip threads it starts); only layers the image will
have; never a layer twice at once (the per-layer lock in ``backend.oci.layerstore``).  When the solve ends,
what has not started is dropped (the exporter does it), a failed or interrupted build also stops the
one under way (its temp file is removed: the store keeps only whole, verified blobs), and the worker
is joined either way, so nothing outlives the solve.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from ir import ops as irops

from backend.events import Event
from backend.oci.layerstore import Cancelled, write_layer_to_store
from backend.oci.layertar import is_empty_layer
from backend.store.blobs import BlobStore

NICE = 10  # the worker's niceness: a step's processes get ~10x its CPU share when both want it


@dataclass(frozen=True)
class Precompress:
    """One way the export will compress layers; every field changes the blob's bytes."""

    compression: str  # gzip | zstd
    level: int | None = None
    source_date_epoch: int | None = None


def image_chain(doc: irops.Document, roots: Iterable[irops.Ref]) -> set[tuple[str, int]]:
    """The (op, output) pairs whose layers all end up in a root's image: from the root down its
    rootfs (an image op's input, a file op's base, the exec mount that gives the output, every input
    of a merge).  A diff's inputs are left out (its result drops the lower's layers), and so is
    everything else a root only reads from (another stage, a bind mount)."""
    chain: set[tuple[str, int]] = set()
    stack = [(r.op, r.output) for r in roots]
    while stack:
        digest, output = stack.pop()
        if (digest, output) in chain:
            continue
        chain.add((digest, output))
        op = doc.ops[digest]
        nxt: list[int] = []
        if op.image is not None:
            nxt = [0]
        elif op.file is not None:
            nxt = [op.file.base]
        elif op.exec is not None:
            nxt = [m.input for m in op.exec.mounts if m.output == output]
        elif op.merge is not None:
            nxt = list(range(len(op.inputs)))
        for i in nxt:
            if 0 <= i < len(op.inputs):
                stack.append((op.inputs[i].op, op.inputs[i].output))
    return chain


class Precompressor:
    """One background worker compressing layer dirs into the blob store, in the order given."""

    def __init__(self, store_root: Path, needs: tuple[Precompress, ...], emit: Callable[[Event], None]):
        self.store_root = store_root
        self.store = None  # opened by the worker, off the solve's path
        self.needs = needs
        self.emit = emit
        self.cancel = threading.Event()
        self._queue: deque[Path] = deque()
        self._seen: set[Path] = set()
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="precompress")
        self._thread.start()

    def submit(self, layers: Iterable[Path]) -> None:
        with self._cond:
            for p in layers:
                if p not in self._seen and not self._closing:
                    self._seen.add(p)
                    self._queue.append(p)
            self._cond.notify()

    def close(self, ok: bool) -> None:
        """Drop what has not started; stop the one under way unless ``ok``; wait for the worker."""
        with self._cond:
            self._closing = True
            self._queue.clear()
            if not ok:
                self.cancel.set()
            self._cond.notify()
        self._thread.join()

    def _next(self) -> Path | None:
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            return self._queue.popleft() if self._queue else None

    def _run(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)  # this thread only (Linux)
        except OSError:
            pass
        try:
            self.store = BlobStore(self.store_root)
        except Exception as e:  # noqa: BLE001 - only a head start: the export opens it again and reports
            self.emit(Event("debug", text=f"precompress: {type(e).__name__}: {e}"))
            return
        while (path := self._next()) is not None:
            for need in self.needs:
                if self.cancel.is_set():
                    return
                self._one(path, need)

    def _one(self, path: Path, need: Precompress) -> None:
        t0 = time.monotonic()
        try:
            if not path.is_dir() or is_empty_layer(path):  # the exporter skips an empty layer
                return
            blob = write_layer_to_store(path, self.store, compression=need.compression, level=need.level,
                                        source_date_epoch=need.source_date_epoch, diff_id="sha256:" + path.name,
                                        cancel=self.cancel)
        except Cancelled:
            return
        except Exception as e:  # noqa: BLE001 - only a head start: the exporter does it again and reports
            self.emit(Event("debug", text=f"precompress {path.name[:12]}: {type(e).__name__}: {e}"))
            return
        self.emit(Event("debug", text=f"precompressed layer {path.name[:12]} ({need.compression}) as "
                                      f"{blob.digest} in {time.monotonic() - t0:.2f}s"))
