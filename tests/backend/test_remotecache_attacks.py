"""A shared cache's layer as the store remembers it: what a later export (with no --cache-from)
reuses must be the blob's true size and compression, whatever the cache's document says."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.oci.compression import MT_LAYER_GZIP, MT_LAYER_ZSTD
from backend.oci.layerstore import write_layer_to_store
from backend.oci.pull import ImageResolver, RemoteLayer
from backend.snapshot.layertree import layer_tree_digest
from backend.store.blobs import BlobStore
from backend.store.cache import CacheStore


@pytest.fixture
def layer(tmp_path: Path):
    """A layer another machine built: its tree digest and its gzip blob (bytes, digest, diff_id)."""
    d = tmp_path / "layer"
    d.mkdir()
    (d / "a.txt").write_text("hello\n")
    theirs = BlobStore(tmp_path / "theirs")
    b = write_layer_to_store(d, theirs, compression="gzip", source_date_epoch=0)
    return layer_tree_digest(d), theirs.read_bytes(b.digest), b


@pytest.mark.parametrize("lie", ["size", "media type"])
def test_the_stores_memo_of_a_cached_layer_is_the_blobs_own(tmp_path, layer, lie):
    tree, data, b = layer
    store = CacheStore(tmp_path / "victim")
    store.blobs.write_bytes(data)  # already here (an earlier pull or export): never fetched, never sized
    size = b.size + 1000 if lie == "size" else b.size
    media_type = MT_LAYER_ZSTD if lie == "media type" else MT_LAYER_GZIP
    images = ImageResolver(store)
    images.add_remote({tree: RemoteLayer(b.digest, media_type, size, b.diff_id, "sde=0")}, {},
                      ("layout", tmp_path / "nowhere"))
    assert images.ensure_layer(tree).is_dir()
    assert store.blobs.lookup_compressed(b.diff_id, "zstd") is None
    memo = store.blobs.lookup_compressed(b.diff_id, "gzip")
    assert memo is not None and memo.size == len(data) and memo.media_type == MT_LAYER_GZIP
