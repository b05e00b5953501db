"""What a prune keeps and drops: the least recently used entries until the store fits its budget,
and, for ``prune --all --keep-images``, the closure of the pulled images to keep.  ``CacheStore.prune``
holds the GC lock exclusively and deletes the files; these decide, over the index rows."""

from __future__ import annotations

import json
import sqlite3

from backend.store.blobs import BlobError, BlobStore


def image_closure(blobs_store: BlobStore, roots: tuple[str, ...]) -> tuple[set[str], set[str]]:
    """(blobs, layer ids) of the images named by manifest or index digests ``roots``: the
    manifests, configs and layer blobs present in the store, and the layers' diff_ids."""
    blobs: set[str] = set()
    layers: set[str] = set()
    todo = list(roots)
    while todo:
        digest = todo.pop()
        try:
            if digest in blobs or not blobs_store.has(digest):
                continue
        except (BlobError, TypeError):  # not a sha256 digest: nothing of ours
            continue
        blobs.add(digest)
        try:
            body = json.loads(blobs_store.read_bytes(digest))
        except (OSError, ValueError):
            continue
        if not isinstance(body, dict):
            continue
        if isinstance(body.get("manifests"), list):  # an index: every platform's manifest it holds
            todo += [m["digest"] for m in body["manifests"] if isinstance(m, dict) and "digest" in m]
        config = body.get("config")
        if isinstance(config, dict) and "digest" in config:  # a manifest: its config and layers
            blobs.update(d["digest"] for d in body.get("layers", []) if isinstance(d, dict) and "digest" in d)
            todo.append(config["digest"])
        rootfs = body.get("rootfs")
        if isinstance(rootfs, dict):  # a config: its layers, by diff_id
            layers.update(d for d in rootfs.get("diff_ids", []) if isinstance(d, str))
    return blobs, layers

def prune_lru(db: sqlite3.Connection, keep_storage: int, mount_bytes: int) -> None:
    """Drop unreferenced layers, then results, least recently used first, until under budget."""
    rows = db.execute("SELECT id, size, blob_size, last_used FROM layers ORDER BY last_used ASC").fetchall()
    sizes = {r[0]: (r[1] or 0) + (r[2] or 0) for r in rows}
    uses: dict[str, int] = {}
    parsed = []
    for key, data in db.execute("SELECT key, outputs FROM results ORDER BY last_used ASC").fetchall():
        ids = {lid for o in json.loads(data) for lid in o["layers"]}
        parsed.append((key, ids))
        for i in ids:
            uses[i] = uses.get(i, 0) + 1
    total = sum(sizes.values()) + mount_bytes

    def drop_layer(i: str) -> None:
        nonlocal total
        db.execute("DELETE FROM layers WHERE id=?", (i,))
        total -= sizes.pop(i, 0)

    for r in rows:
        if total <= keep_storage:
            return
        if not uses.get(r[0]):
            drop_layer(r[0])
    for key, ids in parsed:
        if total <= keep_storage:
            return
        db.execute("DELETE FROM results WHERE key=?", (key,))
        for i in ids:
            uses[i] -= 1
            if uses[i] == 0 and i in sizes:
                drop_layer(i)
