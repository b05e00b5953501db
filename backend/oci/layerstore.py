"""Layers in the blob store: each layer is compressed once per compression and SOURCE_DATE_EPOCH
and found again by its diff_id (or by the hint of immutable content it came from), and a pulled
layer's original blob is recorded when it is extracted, so that exporting it unchanged reuses it.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO, Iterable

from backend.errors import LayerError
from backend.oci.compression import MEDIA_TYPES, MT_LAYER, sniff_compression
from backend.oci.extract import ExtractLimits, ExtractResult, extract_layer
from backend.oci.layertar import LayerBlob, layer_diff_id, write_layer
from backend.store.blobs import BlobStore, CompressedBlob


class Cancelled(LayerError):
    """A compression was stopped on request; nothing of it was kept."""


class _CancellableOut:
    """Passes writes to ``out`` until ``cancel`` is set (checked once per compressed chunk)."""

    def __init__(self, out: BinaryIO, cancel: threading.Event) -> None:
        self.out = out
        self.cancel = cancel

    def write(self, data: bytes) -> int:
        if self.cancel.is_set():
            raise Cancelled("layer compression cancelled")
        return self.out.write(data)


_LAYER_LOCKS: dict[tuple[str, ...], threading.Lock] = {}
_LAYER_LOCKS_GUARD = threading.Lock()


def _layer_lock(store: BlobStore, key: str, compression: str, variant: str) -> threading.Lock:
    """One lock per (store, layer, compression, SOURCE_DATE_EPOCH) in this process: a layer the
    build is compressing in the background (``backend.oci.precompress``) is waited for by the exporter,
    then found stored, never compressed twice at once.  (Processes may still race; the blob store is
    content-addressed and its renames atomic, so that only costs time.)"""
    k = (str(store.root), key, compression, variant)
    with _LAYER_LOCKS_GUARD:
        lock = _LAYER_LOCKS.get(k)
        if lock is None:
            lock = _LAYER_LOCKS[k] = threading.Lock()
        return lock


def write_layer_to_store(layer_dir: str | os.PathLike[str], store: BlobStore, *, compression: str = "gzip",
                         level: int | None = None, source_date_epoch: int | None = None, threads: int = 0,
                         diff_id: str | None = None, cancel: threading.Event | None = None) -> LayerBlob:
    """Compress a layer into ``store``, reusing the blob already recorded for its diff_id.

    ``diff_id`` is a hint naming *immutable* content: the diff_id of the blob the layer was extracted
    from (a pulled layer), or a committed layer's id. If the store maps it (directly, or through the
    alias recorded the last time this layer was written with the same SOURCE_DATE_EPOCH) to a blob of
    this compression, the directory is not read at all. Without a hint the tar is hashed once (cheap)
    to look the mapping up before compressing. ``cancel`` set stops the compression (:class:`Cancelled`;
    the temp file is removed).
    """
    variant = f"sde={source_date_epoch}"
    key = diff_id if diff_id is not None else os.path.realpath(layer_dir)
    with _layer_lock(store, key, compression, variant):
        return _write_layer_to_store(layer_dir, store, compression, level, source_date_epoch, threads, diff_id,
                                     variant, cancel)


def _write_layer_to_store(layer_dir, store, compression, level, source_date_epoch, threads, diff_id, variant,
                          cancel) -> LayerBlob:
    if diff_id is None:
        diff_id = layer_diff_id(layer_dir, source_date_epoch=source_date_epoch)
        hint = None
    else:
        hint = diff_id
        real = store.lookup_layer_alias(hint, variant)
        if real is not None and store.lookup_compressed(real, compression) is not None:
            diff_id = real
    hit = store.lookup_compressed(diff_id, compression)
    if hit is not None:
        return LayerBlob(hit.digest, diff_id, hit.size, hit.media_type)
    with store.writer() as w:
        blob = write_layer(layer_dir, w if cancel is None else _CancellableOut(w, cancel), compression=compression,
                           level=level, source_date_epoch=source_date_epoch, threads=threads)
        w.commit(blob.digest, blob.size)
    store.record_compressed(blob.diff_id, compression, CompressedBlob(blob.digest, blob.size, blob.media_type))
    if hint is not None and hint != blob.diff_id:
        store.record_layer_alias(hint, variant, blob.diff_id)
    return blob


def write_layers_to_store(layer_dirs: Iterable[str | os.PathLike[str] | tuple[str | os.PathLike[str], str | None]],
                          store: BlobStore, *, compression: str = "gzip", level: int | None = None,
                          source_date_epoch: int | None = None, max_workers: int | None = None,
                          threads: int = 0) -> list[LayerBlob]:
    """Compress several layers in parallel (zlib/zstd/sha256 release the GIL); results in input order.

    Each item is a layer dir or ``(layer_dir, diff_id_hint)``.
    """
    items = [d if isinstance(d, tuple) else (d, None) for d in layer_dirs]
    workers = max_workers or min(len(items), os.cpu_count() or 1) or 1
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="compress") as ex:
        futs = [ex.submit(write_layer_to_store, d, store, compression=compression, level=level,
                          source_date_epoch=source_date_epoch, threads=threads, diff_id=h) for d, h in items]
        return [f.result() for f in futs]


# ---------------------------------------------------------------------------------------------


def extract_stored_layer(store: BlobStore, desc: dict, dest_dir: str | os.PathLike[str], *,
                         expected_diff_id: str | None = None, limits: ExtractLimits = ExtractLimits()) -> ExtractResult:
    """Extract a layer blob from ``store`` (descriptor: digest, size, mediaType) and record
    diff_id -> blob in the store, so exporting the unchanged layer later reuses the original blob
    (pass ``LayerSource(path, diff_id=result.diff_id)``). ``expected_diff_id`` comes from the image
    config's ``rootfs.diff_ids``; a mismatch is an error."""
    with store.open(desc["digest"]) as f:
        kind = sniff_compression(f.read(4))
        f.seek(0)
        res = extract_layer(f, desc.get("mediaType", MT_LAYER), dest_dir, limits=limits)
    if expected_diff_id is not None and res.diff_id != expected_diff_id:
        raise LayerError(f"layer {desc['digest']} uncompresses to {res.diff_id}, but the image config says "
                         f"{expected_diff_id}")
    media_type = desc.get("mediaType") or MEDIA_TYPES[kind]
    if "docker" in media_type:
        media_type = MEDIA_TYPES[kind]
    store.record_compressed(res.diff_id, kind, CompressedBlob(desc["digest"], store.size(desc["digest"]), media_type))
    return res
