"""A shared cache's layers as the image resolver fetches them (``backend.oci.pull``): a blob is used
only once its tree is the layer id it is named by (extraction's file notes make the check cheaper,
never weaker), and the layers a result needs are fetched side by side, each one checked."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from pathlib import Path

import pytest

from backend.oci.extract import extract_layer
from backend.oci.pull import ImageResolver, LayerUnavailable, RemoteLayer
from backend.snapshot.layertree import layer_tree_digest
from backend.store.cache import CacheStore
from tests.security.conftest import entry, tar_bytes

MT_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def _cache_dir(root: Path, tars: list[bytes]) -> tuple[Path, list[tuple[str, RemoteLayer]]]:
    """An OCI layout holding ``tars`` gzipped, and each one's (tree digest, RemoteLayer)."""
    layout = root / "cache"
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": []}))
    out = []
    for n, tar in enumerate(tars):
        blob = gzip.compress(tar, mtime=0)
        digest = hashlib.sha256(blob).hexdigest()
        (layout / "blobs" / "sha256" / digest).write_bytes(blob)
        extract_layer(io.BytesIO(tar), "application/vnd.oci.image.layer.v1.tar", root / f"ref{n}")
        tree = layer_tree_digest(root / f"ref{n}")
        out.append((tree, RemoteLayer(f"sha256:{digest}", MT_GZIP, len(blob),
                                      "sha256:" + hashlib.sha256(tar).hexdigest())))
    return layout, out


def _tar(name: str, data: bytes) -> bytes:
    return tar_bytes([entry("app", "dir"), entry(f"app/{name}", data=data), entry("app/also", "hardlink",
                                                                                  link=f"app/{name}")])


def test_a_cache_layer_is_used_once_its_tree_is_its_name(tmp_path):
    layout, [(tree, x)] = _cache_dir(tmp_path, [_tar("main.py", b"print('hi')\n" * 100)])
    images = ImageResolver(CacheStore(tmp_path / "store"))
    images.add_remote({tree: x}, {}, ("layout", layout))
    got = images.ensure_layer(tree)
    assert (got / "app" / "main.py").read_bytes() == b"print('hi')\n" * 100
    assert layer_tree_digest(got) == tree


def test_a_cache_layer_whose_tree_is_not_its_name_is_refused(tmp_path):
    """The blob and its tar are what the cache says, the files are not the layer the cache names
    (a cache that maps a result to another result's blob): refused, naming the cache."""
    layout, [(_, x), (other, _)] = _cache_dir(tmp_path, [_tar("main.py", b"evil"), _tar("main.py", b"good")])
    images = ImageResolver(CacheStore(tmp_path / "store"))
    images.add_remote({other: x}, {}, ("layout", layout))
    with pytest.raises(LayerUnavailable, match="unpacks to the tree") as e:
        images.ensure_layer(other)
    assert e.value.origin == ("layout", layout)
    assert not CacheStore(tmp_path / "store").has_layer(other)


def test_the_layers_of_a_result_are_fetched_together_and_each_checked(tmp_path):
    layout, layers = _cache_dir(tmp_path, [_tar(f"f{i}", bytes([i]) * 5000) for i in range(4)])
    (good0, x0), (good1, x1), (bad, _), (good3, x3) = layers
    images = ImageResolver(CacheStore(tmp_path / "store"))
    images.add_remote({good0: x0, good1: x1, bad: x0, good3: x3}, {}, ("layout", layout))
    with pytest.raises(LayerUnavailable, match=f"layer {bad} .*unpacks to the tree"):
        images.ensure_layers([good0, good1, bad, good3])
    store = CacheStore(tmp_path / "store")
    assert [store.has_layer(i) for i in (good0, good1, bad, good3)] == [True, True, False, True]
    images.ensure_layers([good0, good1, good3])  # all there now: nothing to fetch


def test_big_layers_are_unpacked_in_a_process_of_their_own_and_checked_the_same(tmp_path, monkeypatch):
    """Above ``MIN_BLOB_BYTES`` the blob is unpacked (and its tree digested) by a child process:
    the same layer dir, and a wrong tree still refused."""
    import backend.oci.pull as pull

    monkeypatch.setattr(pull, "MIN_BLOB_BYTES", 0)
    layout, [(tree, x), (other, _)] = _cache_dir(tmp_path, [_tar("main.py", b"good" * 9000), _tar("main.py", b"bad")])
    images = ImageResolver(CacheStore(tmp_path / "store"))
    images.add_remote({tree: x, other: x}, {}, ("layout", layout))
    assert layer_tree_digest(images.ensure_layer(tree)) == tree
    assert (CacheStore(tmp_path / "store").layer_path(tree) / "app" / "also").read_bytes() == b"good" * 9000
    with pytest.raises(LayerUnavailable, match="unpacks to the tree"):
        images.ensure_layer(other)
