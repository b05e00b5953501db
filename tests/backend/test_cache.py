"""The cache store: atomic layer commits, index rows, sessions, stale cleanup, du and prune."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

import pytest

from backend.store.cache import CacheStore, Output, default_root
from backend.errors import CacheError
from backend.snapshot.snapshotter import layer_tree_digest


def make_layer(store: CacheStore, session: Path, files: dict[str, bytes]) -> str:
    upper = store.new_work_dir(session, "t-") / "layer"
    upper.mkdir()
    for name, data in files.items():
        (upper / name).write_bytes(data)
    lid = layer_tree_digest(upper)
    store.commit_layer(upper, lid)
    return lid


def test_default_root_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IRCTL_CACHE_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert default_root() == tmp_path / "a"
    monkeypatch.delenv("IRCTL_CACHE_DIR")
    assert default_root() == tmp_path / "x" / "irctl"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_root() == Path.home() / ".cache" / "irctl"


def test_commit_is_atomic_and_an_existing_layer_wins(tmp_path: Path) -> None:
    store = CacheStore(tmp_path)
    with store.session() as s:
        lid = make_layer(store, s, {"a": b"1"})
        again = make_layer(store, s, {"a": b"1"})
    assert lid == again
    assert sorted(p.name for p in (tmp_path / "layers").iterdir()) == [lid.split(":")[1]]
    assert (store.layer_path(lid) / "a").read_bytes() == b"1"
    assert list((tmp_path / "tmp").iterdir()) == []  # nothing left behind


def test_lookup_returns_recorded_outputs_and_misses_when_a_layer_is_gone(tmp_path: Path) -> None:
    store = CacheStore(tmp_path)
    with store.session() as s:
        lid = make_layer(store, s, {"a": b"1"})
    out = Output("sha256:" + "1" * 64, (lid,), {"config": {"Cmd": ["sh"]}})
    store.record("k1", [out])
    assert store.lookup("k1") == [out]
    assert store.lookup("k2") is None
    import shutil

    shutil.rmtree(store.layer_path(lid))
    assert store.lookup("k1") is None


def test_stale_session_dirs_are_removed_only_when_their_owner_is_gone(tmp_path: Path) -> None:
    store = CacheStore(tmp_path)
    dead = tmp_path / "tmp" / "s-dead"
    dead.mkdir()
    (dead / "half-written").write_bytes(b"x")
    (tmp_path / "tmp" / "s-dead.lock").touch()
    live = tmp_path / "tmp" / "s-live"
    live.mkdir()
    fd = os.open(tmp_path / "tmp" / "s-live.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        store.clean_stale()
        assert not dead.exists() and live.exists()
    finally:
        os.close(fd)


def test_prune_all_and_lru(tmp_path: Path) -> None:
    store = CacheStore(tmp_path)
    with store.session() as s:
        old = make_layer(store, s, {"old": b"o" * 100_000})
        new = make_layer(store, s, {"new": b"n" * 100_000})
    store.record("old", [Output("sha256:" + "1" * 64, (old,))])
    store.record("new", [Output("sha256:" + "2" * 64, (new,))])
    store.lookup("new")  # most recently used
    size_new = store.du().layer_bytes // 2
    store.prune(keep_storage=size_new + 10_000)
    assert store.lookup("old") is None and store.lookup("new") is not None
    assert not store.layer_path(old).exists() and store.layer_path(new).exists()
    store.prune(all=True)
    assert store.du().total == 0 and store.lookup("new") is None


def test_prune_all_keeping_pulled_images(tmp_path: Path) -> None:
    """``prune(all=True, keep_images=...)`` drops every build result but keeps the named images: an
    index, its manifest, config and layer blobs, and the extracted layer (as docker builder prune -a)."""
    import gzip
    import io
    import json
    import tarfile

    store = CacheStore(tmp_path)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        info = tarfile.TarInfo("hello")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))
    diff_id = "sha256:" + __import__("hashlib").sha256(raw.getvalue()).hexdigest()
    layer_blob = store.blobs.write_bytes(gzip.compress(raw.getvalue()))
    config = store.blobs.write_bytes(json.dumps({"rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode())
    manifest = store.blobs.write_bytes(json.dumps({
        "schemaVersion": 2, "config": {"digest": config, "size": 1},
        "layers": [{"digest": layer_blob, "size": 1, "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"}],
    }).encode())
    index = store.blobs.write_bytes(json.dumps({"manifests": [{"digest": manifest}, {"digest": "nonsense"}]}).encode())
    other = store.blobs.write_bytes(b"an exported blob of a built layer")
    store.record_layer_blob(diff_id, layer_blob, "application/vnd.oci.image.layer.v1.tar+gzip", 1)

    def extract(dest: Path) -> None:
        dest.mkdir()
        (dest / "hello").write_bytes(b"hi")

    base = store.ensure_layer(diff_id, extract)
    with store.session() as s:
        built = make_layer(store, s, {"built": b"b" * 1000})
    store.record("k", [Output("sha256:" + "1" * 64, (diff_id, built))])

    store.prune(all=True, keep_images=(index,))
    assert store.lookup("k") is None and not store.layer_path(built).exists()
    assert base.is_dir() and store.has_layer(diff_id) and store.layer_blob(diff_id) == (
        layer_blob, "application/vnd.oci.image.layer.v1.tar+gzip", 1)
    assert all(store.blobs.has(d) for d in (index, manifest, config, layer_blob)) and not store.blobs.has(other)
    store.prune(all=True)
    assert store.du().total == 0 and not base.exists()


def test_prune_waits_for_running_builds(tmp_path: Path) -> None:
    store = CacheStore(tmp_path)
    with store.session():
        with pytest.raises(CacheError, match="in use by a running build"):
            store.prune(all=True, timeout=0.2)
    store.prune(all=True, timeout=0.2)


def test_cache_mount_created_once_and_locked(tmp_path: Path) -> None:
    store = CacheStore(tmp_path)
    calls = []

    def create(d: Path) -> None:
        calls.append(d)
        d.mkdir()
        (d / "seed").write_text("s")

    path = store.mount_dir("go-build", create)
    assert store.mount_dir("go-build", create) == path and len(calls) == 1
    fd = store.mount_lock("go-build", exclusive=True)
    try:
        assert store.mount_lock("go-build", exclusive=True, wait=False) is None
    finally:
        os.close(fd)  # type: ignore[arg-type]
    fd2 = store.mount_lock("go-build", exclusive=True, wait=False)
    assert fd2 is not None
    os.close(fd2)


def test_concurrent_commits_of_the_same_layer(tmp_path: Path) -> None:
    store = CacheStore(tmp_path)
    ids: list[str] = []
    with store.session() as s:
        threads = [threading.Thread(target=lambda: ids.append(make_layer(store, s, {"same": b"x"})))
                   for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(set(ids)) == 1 and len(ids) == 8
    assert (store.layer_path(ids[0]) / "same").read_bytes() == b"x"
