"""The copy snapshotter: where no overlay can be mounted, the lowers are copied into a scratch root
and, on exit, the root is compared with a metadata snapshot taken before the step to write the diff
overlayfs would have written."""

from __future__ import annotations

import contextlib
import ctypes
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from backend.fs import safefs
from backend.fs.layerformat import opaque_xattr
from backend.snapshot.base import Snapshotter, scratch_dir
from backend.snapshot.layertree import apply_layers, copy_entry, copy_meta
from backend.snapshot.mount import libc


class CopySnapshotter(Snapshotter):
    """Fallback without overlayfs: copy the lowers into a scratch root, diff it against a metadata snapshot."""

    name = "copy"

    @contextlib.contextmanager
    def mounted(self, lowers: Sequence[Path], upper: Path, workdir: Path) -> Iterator[Path]:
        with scratch_dir(workdir) as scratch:
            root = os.path.join(scratch, "rootfs")
            apply_layers(lowers, Path(root))
            before = _metadata_snapshot(root)
            marker = os.path.join(scratch, "snapshot-taken")
            open(marker, "wb").close()
            yield Path(root)
            Path(upper).mkdir(parents=True, exist_ok=True)
            _write_diff(root, before, os.fspath(upper), _btime_ns(marker))


_Meta = tuple[int, int, int, int, int]  # ino, mode, ctime_ns, mtime_ns, size


def _meta(st: os.stat_result) -> _Meta:
    return (st.st_ino, st.st_mode, st.st_ctime_ns, st.st_mtime_ns, st.st_size)


def _metadata_snapshot(root: str) -> dict[str, _Meta]:
    snap: dict[str, _Meta] = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel)) as it:
            for e in it:
                r = os.path.join(rel, e.name)
                st = e.stat(follow_symlinks=False)
                snap[r] = _meta(st)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(r)
    return snap


def _write_diff(root: str, before: dict[str, _Meta], upper: str, since: int | None) -> None:
    """Write into `upper` what overlayfs would have: changed entries, whiteouts, opaque re-created dirs.

    A directory deleted and re-created may get its old inode number back; its birth time (statx, when the
    filesystem records one) newer than `since` tells it apart from one that merely changed."""
    children: dict[str, set[str]] = {}
    for r in before:
        head, _, name = r.rpartition("/")
        children.setdefault(head, set()).add(name)
    made: set[str] = set()

    def ensure_dir(rel: str) -> None:
        missing = []
        while rel and rel not in made:
            missing.append(rel)
            rel = os.path.dirname(rel)
        for r in reversed(missing):
            if not os.path.isdir(os.path.join(upper, r)):
                os.mkdir(os.path.join(upper, r))
            made.add(r)

    stack: list[tuple[str, bool]] = [("", False)]  # iterative: a step's tree may nest deeper than the stack
    while stack:
        rel, fresh = stack.pop()
        if rel.count("/") >= safefs.MAX_DEPTH:
            raise safefs.too_deep(rel, "in a step's output")
        with os.scandir(os.path.join(root, rel)) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            r = f"{rel}/{e.name}" if rel else e.name
            st = e.stat(follow_symlinks=False)
            old = None if fresh else before.get(r)
            if stat.S_ISDIR(st.st_mode):
                if (old is not None and stat.S_ISDIR(old[1]) and old[0] == st.st_ino
                        and (old == _meta(st) or not _born_after(e.path, since))):
                    if old != _meta(st):
                        ensure_dir(r)  # copied up: the dir itself or an entry in it changed
                    stack.append((r, False))
                    continue
                ensure_dir(r)
                if old is not None:  # created where something used to be: hides the lower entirely
                    os.setxattr(os.path.join(upper, r), opaque_xattr(), b"y")
                stack.append((r, True))
                continue
            if old is not None and old == _meta(st):
                continue
            ensure_dir(rel)
            copy_entry(e.path, os.path.join(upper, r), st)
        if fresh:
            continue
        gone = children.get(rel, set()) - {e.name for e in entries}
        for name in sorted(gone):
            ensure_dir(rel)
            os.mknod(os.path.join(upper, rel, name), stat.S_IFCHR | 0o000, 0)
    for r in sorted(made, reverse=True):  # children first so parent mtimes stick
        src = os.path.join(root, r)
        copy_meta(src, os.path.join(upper, r), os.lstat(src))


class _StatxTimestamp(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_uint32), ("reserved", ctypes.c_int32)]


class _Statx(ctypes.Structure):
    _fields_ = [("stx_mask", ctypes.c_uint32), ("stx_blksize", ctypes.c_uint32), ("stx_attributes", ctypes.c_uint64),
                ("stx_nlink", ctypes.c_uint32), ("stx_uid", ctypes.c_uint32), ("stx_gid", ctypes.c_uint32),
                ("stx_mode", ctypes.c_uint16), ("pad", ctypes.c_uint16), ("stx_ino", ctypes.c_uint64),
                ("stx_size", ctypes.c_uint64), ("stx_blocks", ctypes.c_uint64),
                ("stx_attributes_mask", ctypes.c_uint64), ("stx_atime", _StatxTimestamp),
                ("stx_btime", _StatxTimestamp), ("spare", ctypes.c_uint8 * 160)]


def _btime_ns(path: str) -> int | None:
    """Birth time of `path` in ns, or None where the filesystem or libc cannot tell."""
    buf = _Statx()
    statx = getattr(libc(), "statx", None)
    if statx is None or statx(-100, os.fsencode(path), 0x100, 0x800, ctypes.byref(buf)) != 0:
        return None  # AT_FDCWD, AT_SYMLINK_NOFOLLOW, STATX_BTIME
    if not buf.stx_mask & 0x800:
        return None
    return buf.stx_btime.tv_sec * 1_000_000_000 + buf.stx_btime.tv_nsec


def _born_after(path: str, since: int | None) -> bool:
    born = _btime_ns(path) if since is not None else None
    return born is not None and born > since
