"""The cache store: atomic layer commits, index rows, sessions, stale cleanup, du and prune."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

import pytest

from backend.store.cache import CacheStore, default_root
from backend.store.records import Output
from backend.errors import CacheError
from backend.snapshot.layertree import layer_tree_digest


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


def test_a_dead_sessions_runtime_dir_goes_to_the_reaper_it_was_given(tmp_path: Path) -> None:
    reaped: list[Path] = []
    runtime_dir = tmp_path / "run" / "irctl-abc"
    runtime_dir.mkdir(parents=True)
    not_ours = tmp_path / "run" / "home"
    not_ours.mkdir()
    tmp = tmp_path / "store" / "tmp"
    without = CacheStore(tmp_path / "store")
    (tmp / "s-dead").mkdir()
    (tmp / "s-dead.lock").touch()
    (tmp / "s-dead.state").write_text(str(runtime_dir))
    (tmp / "s-gone.state").write_text(str(not_ours))  # a note naming anything but an irctl-* dir
    without.clean_stale()  # a store without a reaper leaves the notes for one that has it
    assert sorted(p.name for p in tmp.iterdir()) == ["s-dead.state", "s-gone.state"]
    CacheStore(tmp_path / "store", reap_runtime_dir=reaped.append).clean_stale()
    assert reaped == [runtime_dir] and not_ours.is_dir()
    assert list(tmp.iterdir()) == []


def test_a_failed_fsync_fails_the_commit_and_names_no_layer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import sqlite3

    store = CacheStore(tmp_path)

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    with store.session() as s:
        upper = store.new_work_dir(s, "t-") / "layer"
        upper.mkdir()
        (upper / "a").write_bytes(b"1")
        lid = layer_tree_digest(upper)
        with monkeypatch.context() as m:
            m.setattr(os, "fsync", eio)
            with pytest.raises(CacheError, match=rf"cannot commit layer {lid}: writing it to disk failed: .*/layer: Input/output error"):
                store.commit_layer(upper, lid)
        assert not store.has_layer(lid) and upper.is_dir()
        with sqlite3.connect(store.index_path) as db:
            assert db.execute("SELECT count(*) FROM layers").fetchone()[0] == 0
        assert store.commit_layer(upper, lid) == store.layer_path(lid)  # once fsync works, it commits


def test_a_failed_fsync_of_the_layers_dir_takes_the_layer_back_out(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import sqlite3

    store = CacheStore(tmp_path)
    real = os.fsync

    def eio_on_layers_dir(fd: int) -> None:
        if os.path.samestat(os.fstat(fd), os.stat(store.layers_dir)):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(fd)

    with store.session() as s:
        upper = store.new_work_dir(s, "t-") / "layer"
        upper.mkdir()
        (upper / "a").write_bytes(b"1")
        lid = layer_tree_digest(upper)
        monkeypatch.setattr(os, "fsync", eio_on_layers_dir)
        with pytest.raises(CacheError, match=rf"cannot commit layer {lid}: writing it to disk failed: .*/layers: Input/output error"):
            store.commit_layer(upper, lid)
        assert not store.has_layer(lid) and (upper / "a").read_bytes() == b"1"
        with sqlite3.connect(store.index_path) as db:
            assert db.execute("SELECT count(*) FROM layers").fetchone()[0] == 0


def test_a_failed_syncfs_fails_the_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large tree is flushed with one syncfs(2); its failure is not papered over by fsyncs of
    files opened after the error (which would not report it)."""
    import ctypes
    import errno

    from backend.store import durable

    class FailingLibc:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def syncfs(self, fd: int) -> int:
            ctypes.set_errno(errno.EIO)
            return -1

    monkeypatch.setattr(durable.ctypes, "CDLL", FailingLibc)
    store = CacheStore(tmp_path)
    with store.session() as s:
        upper = store.new_work_dir(s, "t-") / "layer"
        upper.mkdir()
        for i in range(durable.SYNCFS_MIN_FILES):
            (upper / f"f{i}").write_bytes(b"x")
        lid = layer_tree_digest(upper)
        with pytest.raises(CacheError, match=r"writing it to disk failed: .*/layer: Input/output error"):
            store.commit_layer(upper, lid)
        assert not store.has_layer(lid)


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
