"""A cache mount's copy in a shared cache (``--cache-to …,mounts=``): exported under the mount's
lock, brought back as it was, refused both ways when a layer tar would not bring it back
(``backend.oci.mountdir``), carried on from a ``--cache-from`` when this store never had it."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from backend.fs import devnodes
from backend.fs.layerformat import opaque_xattr
from backend.oci.mountdir import overlay_lookalike
from backend.oci.pull import ImageResolver, LayerUnavailable, RemoteLayer
from backend.remotecache.export import _mount_blobs
from backend.snapshot.layertree import layer_tree_digest
from backend.store.cache import CacheStore

ORIGIN = ("layout", Path("/nonexistent-cache"))


def _mount(store: CacheStore, cache_id: str, fill) -> Path:
    def create(tmp: Path) -> None:
        tmp.mkdir()
        fill(tmp)

    return store.mount_dir(cache_id, create)


def _export(store: CacheStore, *ids: str, remote: dict | None = None) -> tuple[dict, dict, list[str]]:
    warnings: list[str] = []
    out, elsewhere = _mount_blobs(store, ids, "gzip", None, remote or {}, warnings.append)
    return out, elsewhere, warnings


def _restore(store: CacheStore, cache_id: str, x: RemoteLayer, dest: Path) -> None:
    images = ImageResolver(store)
    images.add_remote({}, {cache_id: x}, ORIGIN)
    assert images.seed_mount(cache_id, dest)


def _rich(d: Path) -> None:
    (d / "archives" / "partial").mkdir(parents=True)
    (d / "archives" / "a.deb").write_bytes(os.urandom(300_000))
    os.link(d / "archives" / "a.deb", d / "archives" / "hard.deb")
    (d / "lock").write_text("")
    os.chmod(d / "lock", 0o640)
    os.chown(d / "lock", 100, 65534)
    os.symlink("../outside/not-followed", d / "archives" / "link")
    os.mkfifo(d / "fifo")
    os.setxattr(d / "archives" / "a.deb", "user.note", b"kept")
    os.utime(d / "archives" / "a.deb", (1_000_000, 1_000_000))


def test_a_mount_comes_back_as_it_was(tmp_path):
    store = CacheStore(tmp_path / "a")
    path = _mount(store, "/var/cache/apt", _rich)
    out, _, warnings = _export(store, "/var/cache/apt")
    assert warnings == []
    other = CacheStore(tmp_path / "b")
    other.blobs.ingest(store.blobs.open(out["/var/cache/apt"].blob))
    back = tmp_path / "back"
    _restore(other, "/var/cache/apt", out["/var/cache/apt"], back)
    assert layer_tree_digest(back) == layer_tree_digest(path)
    a, hard = os.lstat(back / "archives" / "a.deb"), os.lstat(back / "archives" / "hard.deb")
    assert (a.st_ino, a.st_mtime) == (hard.st_ino, 1_000_000)
    assert os.getxattr(back / "archives" / "a.deb", "user.note") == b"kept"
    assert not (tmp_path / "outside").exists()


def _placeholder(d: Path, name: str) -> None:
    """The store's stand-in for a block device 8:0 (``backend.fs.devnodes``), as a step could forge it."""
    dfd = os.open(d, os.O_RDONLY)
    try:
        os.close(devnodes.make_placeholder(dfd, name, stat.S_IFBLK | 0o600, os.makedev(8, 0)))
    finally:
        os.close(dfd)


@pytest.mark.parametrize("make, why", [
    (lambda d: (d / ".wh.x").write_text(""), "'.wh.x' is named like an overlay whiteout"),
    (lambda d: (d / "sub").mkdir() or (d / "sub" / ".wh..wh..opq").write_text(""), "'sub/.wh..wh..opq' is named"),
    (lambda d: os.mknod(d / "w", stat.S_IFCHR, 0), "'w' is an overlay whiteout (a char device 0:0)"),
    (lambda d: os.mknod(d / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3)), "'null' is a device node"),
    (lambda d: _placeholder(d, "ph"), "'ph' is a device node"),
    (lambda d: (d / "o").mkdir() or os.setxattr(d / "o", opaque_xattr(), b"y"), "'o' carries the overlay opaque mark"),
])
def test_what_a_layer_tar_would_not_bring_back_is_not_exported(tmp_path, make, why):
    if os.geteuid() != 0:
        pytest.skip("device nodes and trusted.* xattrs need root")
    store = CacheStore(tmp_path / "a")
    path = _mount(store, "m", lambda d: (d / "fine").write_text("ok"))
    assert overlay_lookalike(path) == ""
    make(path)
    assert why in overlay_lookalike(path)
    out, _, warnings = _export(store, "m")
    assert out == {} and len(warnings) == 1 and why in warnings[0] and "not exported" in warnings[0], warnings


def test_export_waits_for_a_writer_holding_the_mount_lock(tmp_path):
    store = CacheStore(tmp_path / "a")
    path = _mount(store, "m", lambda d: (d / "f").write_text("half"))
    fd = store.mount_lock("m", exclusive=True)  # a sharing=locked (or private) step is writing
    result: list = []
    t = threading.Thread(target=lambda: result.append(_export(store, "m")))
    t.start()
    time.sleep(0.3)
    assert t.is_alive()
    (path / "f").write_text("whole")
    os.close(fd)
    t.join(10)
    out = result[0][0]["m"]
    back = tmp_path / "back"
    _restore(store, "m", out, back)
    assert (back / "f").read_text() == "whole"


def test_a_mount_this_store_never_had_is_carried_on_from_the_cache_that_gave_it(tmp_path):
    store = CacheStore(tmp_path / "a")
    x = RemoteLayer("sha256:" + "a" * 64, "application/vnd.oci.image.layer.v1.tar+gzip", 10, "sha256:" + "b" * 64)
    out, elsewhere, warnings = _export(store, "given", "unknown", remote={"given": (x, ORIGIN)})
    assert out == {"given": x} and elsewhere == {x.blob: ORIGIN}
    assert warnings == ["warning: cache mount 'unknown' is not in this cache store (no step mounted it here); "
                        "not exported"]


def test_a_restore_that_is_not_what_the_cache_names_is_refused(tmp_path):
    store = CacheStore(tmp_path / "a")
    _mount(store, "m", lambda d: (d / "f").write_text("x"))
    x = _export(store, "m")[0]["m"]
    wrong = RemoteLayer(x.blob, x.media_type, x.size, "sha256:" + "0" * 64)
    with pytest.raises(LayerUnavailable, match="cache mount 'm' from cache directory /nonexistent-cache: its blob"):
        _restore(store, "m", wrong, tmp_path / "back")
