"""``type=local`` and ``type=tar``: the final root filesystem, flattened from the layers.

Layers are applied bottom first onto ``dest`` as overlayfs would show them: a whiteout (char 0:0)
deletes the path below, an opaque directory hides everything below it, the rest replaces what was
there. Hard links inside one layer stay hard links. ``export_tar`` flattens into a temp dir and tars it
with the same deterministic writer as layers.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Sequence

from backend.export.image import ImageSpec, LayerLike, _source
from backend.layers import OPAQUE_XATTR, _SKIP_XATTR_PREFIXES, write_layer
from backend.snapshot import remove_path


def _copy_meta(src: bytes, dst: bytes, st: os.stat_result, is_root: bool) -> None:
    link = stat.S_ISLNK(st.st_mode)
    for name in _listxattr(src):
        if name.startswith(_SKIP_XATTR_PREFIXES):
            continue
        try:
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
    if is_root:
        os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    if not link:
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _listxattr(p: bytes) -> list[str]:
    try:
        return os.listxattr(p, follow_symlinks=False)
    except OSError:
        return []


def apply_layer(layer: bytes, dest: bytes, is_root: bool, private_devices: bool = False) -> None:
    """``private_devices``: device nodes become root:root 0600 (a node on the host is a door to the
    hardware; a hostile image must not hand one to another user)."""
    links: dict[tuple[int, int], bytes] = {}
    dir_meta: list[tuple[bytes, bytes, os.stat_result]] = []

    def visit(src_dir: bytes, dst_dir: bytes) -> None:
        for name in sorted(os.listdir(src_dir)):
            s, d = src_dir + b"/" + name, dst_dir + b"/" + name
            st = os.lstat(s)
            m = st.st_mode
            if stat.S_ISCHR(m) and st.st_rdev == 0:
                remove_path(d)
                continue
            if stat.S_ISDIR(m):
                opaque = False
                try:
                    opaque = os.getxattr(s, OPAQUE_XATTR, follow_symlinks=False) == b"y"
                except OSError:
                    pass
                if opaque or not (os.path.isdir(d) and not os.path.islink(d)):
                    remove_path(d)
                    os.mkdir(d, 0o700)
                visit(s, d)
                dir_meta.append((s, d, st))
                continue
            remove_path(d)
            key = (st.st_dev, st.st_ino)
            if stat.S_ISREG(m) and st.st_nlink > 1 and key in links:
                os.link(links[key], d)
                continue
            if stat.S_ISREG(m):
                shutil.copyfile(s, d, follow_symlinks=False)
                links[key] = d
            elif stat.S_ISLNK(m):
                os.symlink(os.readlink(s), d)
            elif stat.S_ISFIFO(m):
                os.mkfifo(d, 0o600)
            elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
                if not is_root:
                    continue
                os.mknod(d, stat.S_IFMT(m) | 0o600, st.st_rdev)
                if private_devices:
                    _copy_meta(s, d, st, is_root)
                    os.chown(d, 0, 0, follow_symlinks=False)
                    os.chmod(d, stat.S_IMODE(m) & 0o600)
                    continue
            else:
                continue
            _copy_meta(s, d, st, is_root)

    visit(layer, dest)
    for s, d, st in dir_meta:  # children first (post-order), so mtimes stick
        _copy_meta(s, d, st, is_root)


def flatten_layers(layers: Sequence[LayerLike], dest: str | os.PathLike[str], private_devices: bool = False) -> Path:
    """Apply ``layers`` (bottom first) onto ``dest`` (created if needed)."""
    out = os.fsencode(os.fspath(dest))
    os.makedirs(out, exist_ok=True)
    is_root = os.geteuid() == 0
    for layer in layers:
        apply_layer(os.fsencode(os.fspath(_source(layer).path)), out, is_root, private_devices)
    return Path(os.fsdecode(out))


def export_local(spec: ImageSpec, dest: str | os.PathLike[str]) -> Path:
    """Write the image's flattened rootfs into directory ``dest``."""
    return flatten_layers(spec.layers, dest, private_devices=True)


def export_tar(spec: ImageSpec, out: BinaryIO, *, tmp_dir: str | os.PathLike[str] | None = None,
               source_date_epoch: int | None = None) -> str:
    """Write the flattened rootfs as one uncompressed tar to ``out``; returns its sha256 digest."""
    with tempfile.TemporaryDirectory(prefix="flatten-", dir=tmp_dir) as tmp:
        flatten_layers(spec.layers, tmp)
        return write_layer(tmp, out, compression="none", source_date_epoch=source_date_epoch).diff_id
