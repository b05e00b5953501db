"""``type=tar`` written straight from the layers gives the same bytes as tarring the flattened tree
(``flatten_layers`` + the layer writer, what it did before), on layers that exercise every merge rule."""

from __future__ import annotations

import io
import os
import socket
import stat
from pathlib import Path

import pytest

from backend.fs import devnodes
from backend.export.local import flatten_layers
from backend.export.rootfs import write_rootfs_tar
from backend.fs.layerformat import opaque_xattr
from backend.oci.layertar import write_layer

ROOT = os.geteuid() == 0
pytestmark = pytest.mark.skipif(not ROOT, reason="whiteouts, owners and device placeholders need root")


def _reference(layers: list[Path], tmp: Path, sde: int | None) -> bytes:
    flat = flatten_layers(layers, tmp / "flat")
    out = io.BytesIO()
    write_layer(flat, out, compression="none", source_date_epoch=sde)
    return out.getvalue()


def _direct(layers: list[Path], sde: int | None) -> tuple[bytes, str]:
    out = io.BytesIO()
    digest = write_rootfs_tar(layers, out, source_date_epoch=sde)
    return out.getvalue(), digest


def _file(p: Path, text: str = "x", mode: int = 0o644, owner: tuple[int, int] = (0, 0)) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    os.chmod(p, mode)
    os.chown(p, *owner)


def _whiteout(p: Path) -> None:
    os.mknod(p, stat.S_IFCHR, os.makedev(0, 0))


def _layers(tmp: Path) -> list[Path]:
    a, b, c = tmp / "a", tmp / "b", tmp / "c"
    # bottom: a tree with hard links, a symlink where an upper layer puts a dir, a dir an upper layer
    # replaces by a file, an opaque-to-be dir, a device placeholder, a fifo, xattrs, owners, setuid
    _file(a / "etc/passwd", "root\n")
    _file(a / "etc/group", "g\n")
    _file(a / "bin/tool", "#!/bin/sh\n", 0o4755)
    os.link(a / "bin/tool", a / "bin/tool2")
    os.link(a / "bin/tool", a / "bin/tool3")
    _file(a / "keep/inner/f", "deep", owner=(1000, 1001))
    os.symlink("/elsewhere", a / "linkdir")
    _file(a / "gone/sub/file", "below")
    _file(a / "hidden/old1")
    _file(a / "hidden/old2")
    (a / "dev").mkdir()
    os.close(devnodes.make_placeholder(os.open(a / "dev", os.O_RDONLY), b"null", stat.S_IFCHR | 0o666,
                                       os.makedev(1, 3)))
    os.mkfifo(a / "fifo")
    os.setxattr(a / "etc/passwd", "user.note", b"v")
    for p in (a / "etc", a / "keep/inner/f"):
        os.utime(p, (1_600_000_000, 1_600_000_000))
    # middle: delete, replace, make opaque, link again inside one layer
    (b / "etc").mkdir(parents=True)
    _whiteout(b / "etc/group")
    _file(b / "bin/tool2", "new tool2")  # breaks tool2 off the group; tool and tool3 stay linked
    _file(b / "linkdir/now-a-dir", "d")
    _file(b / "gone", "now a file")
    (b / "hidden").mkdir()
    os.setxattr(b / "hidden", opaque_xattr(), b"y")
    _file(b / "hidden/new")
    _file(b / "pair/one", "same")
    os.link(b / "pair/one", b / "pair/two")
    os.chmod(b / "etc", 0o750)
    # top: a whiteout of a whole dir, then re-created contents elsewhere; a file over a dir's child
    (c / "keep").mkdir(parents=True)
    _whiteout(c / "keep/inner")
    _file(c / "gone", "again")
    _file(c / "pair/one", "replaced")  # pair/two keeps the old content, alone
    os.link(a / "etc/passwd", c / "shared")  # one inode in two layers: two files, not a link
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(os.fspath(c / "fifo"))  # a socket is no tar entry, but it still replaces the fifo below
    sock.close()
    return [a, b, c]


@pytest.mark.parametrize("sde", [None, 1_650_000_000])
def test_direct_tar_equals_flattened_tar(tmp_path: Path, sde: int | None) -> None:
    layers = _layers(tmp_path)
    want = _reference(layers, tmp_path, sde)
    got, digest = _direct(layers, sde)
    assert got == want
    import hashlib

    assert digest == "sha256:" + hashlib.sha256(want).hexdigest()


def test_direct_tar_of_one_layer_equals_the_layer_writer(tmp_path: Path, busybox_rootfs: Path) -> None:
    want = _reference([busybox_rootfs], tmp_path, None)
    assert _direct([busybox_rootfs], None)[0] == want
