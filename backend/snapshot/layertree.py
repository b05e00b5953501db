"""Layer trees on disk: copying an entry with its metadata, flattening layers into one tree, and a
layer's content identity.

A layer is a directory in overlayfs upper-dir format (``backend.fs.layerformat``).  These are the
operations every snapshotter, the file ops and the exporters share; none of them mounts anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path

from backend.fs import devnodes, safefs
from backend.fs.layerformat import (CANONICAL_OPAQUE_XATTR, is_opaque, is_whiteout, opaque_xattr, overlay_xattr_prefix,
                                    read_xattrs)


def copy_meta(src: str, dst: str, st: os.stat_result, *, xattrs: bool = True, times: bool = True) -> None:
    """Owner, mode, xattrs (minus overlay's private ones) and times of `src` onto `dst`."""
    os.lchown(dst, st.st_uid, st.st_gid)  # before chmod/xattrs: chown clears setuid and security.capability
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    if xattrs:
        private = overlay_xattr_prefix()
        for name, value in read_xattrs(src).items():
            if not name.startswith(private):
                with contextlib.suppress(OSError):
                    os.setxattr(dst, name, value, follow_symlinks=False)
    if times:
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def copy_entry(src: str, dst: str, st: os.stat_result) -> None:
    """Copy one non-directory entry (file, symlink, device, fifo) with its metadata (`st` = lstat of src)."""
    mode = st.st_mode
    if stat.S_ISREG(mode):
        shutil.copyfile(src, dst, follow_symlinks=False)
    elif stat.S_ISLNK(mode):
        os.symlink(os.readlink(src), dst)
    elif devnodes.is_device(mode, st.st_rdev):
        devnodes.make_placeholder_at(dst, mode, st.st_rdev)  # never a node in the store
        copy_meta(src, dst, st)
        return
    elif stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):  # a whiteout or a fifo
        os.mknod(dst, mode, st.st_rdev)
    elif stat.S_ISSOCK(mode):
        return  # sockets are not content
    copy_meta(src, dst, st)


def remove_path(path: str | bytes) -> None:
    """Remove a file, link or whole directory; a missing path is fine."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        safefs.rmtree(path)
    else:
        os.unlink(path)


def apply_layers(lowers: Sequence[Path], dest: Path) -> Path:
    """Flatten layers (bottom first) into the plain directory `dest`, honouring whiteouts and opaque dirs.

    The result carries no whiteouts and no overlay xattrs. Hard links inside one layer are kept. The
    layers are walked with `safefs.walk` (no recursion, no link followed); a directory of `dest` is
    entered only after it was checked (or made) a real directory, so a symlink from a lower layer is
    replaced, never written through."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    dir_meta: dict[str, tuple[str, os.stat_result]] = {}
    for layer in lowers:
        links: dict[tuple[int, int], str] = {}
        _apply_dir(str(layer), str(dest), dir_meta, links)
    for dst, (src, st) in sorted(dir_meta.items(), reverse=True):  # children first: parent mtimes stick
        if os.path.isdir(dst) and not os.path.islink(dst):
            copy_meta(src, dst, st)
    return dest


def _apply_dir(src: str, dst: str, dir_meta: dict, links: dict) -> None:
    for e in safefs.walk(src, where="in a layer"):
        s, d = os.fsdecode(os.path.join(os.fsencode(src), e.rel)), os.path.join(dst, os.fsdecode(e.rel))
        st = e.st
        if is_whiteout(st):
            remove_path(d)
            continue
        if stat.S_ISDIR(st.st_mode):
            if os.path.lexists(d) and (not os.path.isdir(d) or os.path.islink(d)):
                remove_path(d)
            elif os.path.isdir(d) and is_opaque(s):
                safefs.rmtree(d)
            os.makedirs(d, exist_ok=True)
            dir_meta[d] = (s, st)
            continue
        remove_path(d)
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            os.link(links[key], d)
            continue
        copy_entry(s, d, st)
        if st.st_nlink > 1:
            links[key] = d


def strip_overlay_xattrs(upper: Path) -> None:
    """Remove overlayfs' bookkeeping xattrs (origin, impure, uuid, ...) from a layer, keeping `opaque`."""
    top = os.open(upper, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        _strip_xattrs(top)
        for e in safefs.walk(top, sort=False, where="in a step's output"):
            _strip_xattrs(e.xpath)
    finally:
        os.close(top)


def _strip_xattrs(p: bytes | int) -> None:
    nofollow = {} if isinstance(p, int) else {"follow_symlinks": False}
    private, opaque = overlay_xattr_prefix(), opaque_xattr()
    with contextlib.suppress(OSError):
        for x in os.listxattr(p, **nofollow):
            if x.startswith(private) and x != opaque:
                os.removexattr(p, x, **nofollow)


def layer_tree_digest(layer_dir: Path, known: dict[str, tuple[str, int, int, int]] | None = None) -> str:
    """Content identity of a layer: sha256 over its sorted entries, independent of mtimes and inode numbers.

    Each entry contributes its relative path, type, permission bits, uid, gid, xattrs, symlink target,
    content sha256 (regular files) and device numbers (char/block devices, so whiteouts count). The layer
    root itself is not included. Hard links hash as independent files. `known` maps a relative path to
    (sha256 hex, size, mtime_ns, ctime_ns) noted when the file was written (`fileops.apply_actions`); a
    file whose stat still matches is not read again."""
    h = hashlib.sha256(b"irctl-layer-tree-v1\0")
    opaque, device = opaque_xattr(), devnodes.device_xattr()
    records: list[tuple[bytes, bytes]] = []
    for entry in safefs.walk(layer_dir, sort=False, where="in a layer"):  # iterative, fd-relative
        relpath = os.fsdecode(entry.rel)
        st = entry.st
        mode = st.st_mode
        kind = "d" if stat.S_ISDIR(mode) else "f" if stat.S_ISREG(mode) else "l" if stat.S_ISLNK(
            mode) else "c" if stat.S_ISCHR(mode) else "b" if stat.S_ISBLK(mode) else "p" if stat.S_ISFIFO(
            mode) else "s"
        content = link = dev = ""
        if kind == "f":
            note = known.get(relpath) if known else None
            if note is not None and note[1:] == (st.st_size, st.st_mtime_ns, st.st_ctime_ns):
                content = note[0]
            else:
                with open(entry.open(), "rb") as f:
                    content = hashlib.file_digest(f, "sha256").hexdigest()
        elif kind == "l":
            link = os.fsdecode(entry.readlink())
        elif kind in "cb":
            dev = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        found = read_xattrs(entry.xpath)
        if kind == "f" and st.st_size == 0 and device in found:
            node = devnodes.decode(found.pop(device))
            if node is not None:  # a placeholder counts as the node it stands for
                kind = "c" if node[0] == stat.S_IFCHR else "b"
                content, dev = "", f"{os.major(node[1])}:{os.minor(node[1])}"
        xattrs = ",".join(f"{k}={v.hex()}" for k, v in sorted(
            (CANONICAL_OPAQUE_XATTR if k == opaque else k, v) for k, v in found.items()))
        fields = [kind, f"{stat.S_IMODE(mode):o}", str(st.st_uid), str(st.st_gid), xattrs, link, content, dev]
        records.append((entry.rel, "\0".join(fields).encode("utf-8", "surrogateescape")))
    for path, rec in sorted(records):
        h.update(path + b"\0" + rec + b"\0\n")
    return "sha256:" + h.hexdigest()
