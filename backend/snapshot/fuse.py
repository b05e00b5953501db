"""fuse-overlayfs as a snapshotter, where the kernel's overlayfs cannot be mounted (rootless on
kernels < 5.11, a filesystem without user xattrs), and turning its upper dir, whose markers differ
from the kernel's, into the layer format."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from backend.fs import safefs
from backend.fs.layerformat import opaque_xattr
from backend.snapshot.base import Snapshotter, SnapshotError, scratch_dir
from backend.snapshot.layertree import apply_layers, strip_overlay_xattrs
from backend.snapshot.mount import umount
from backend.snapshot.overlay import MAX_OVERLAY_LOWERS


class FuseOverlaySnapshotter(Snapshotter):
    """fuse-overlayfs, where the kernel's overlayfs cannot be mounted (rootless on kernels < 5.11, or a
    filesystem without user xattrs). Its upper dir is overlay's format except for its own opaque markers
    (`user.fuseoverlayfs.opaque`, a `.wh..wh..opq` file) and, where mknod is refused, `.wh.NAME` files
    for whiteouts: `_normalize_fuse_upper` turns those into the layer format after unmounting."""

    name = "fuse-overlayfs"

    @contextlib.contextmanager
    def mounted(self, lowers: Sequence[Path], upper: Path, workdir: Path) -> Iterator[Path]:
        Path(upper).mkdir(parents=True, exist_ok=True)
        with scratch_dir(workdir) as scratch:
            Path(workdir).mkdir(parents=True, exist_ok=True)
            target = os.path.join(scratch, "rootfs")
            os.mkdir(target)
            lower_dirs = [os.path.abspath(p) for p in lowers]
            if not lower_dirs:
                lower_dirs = [os.path.join(scratch, "empty")]
                os.mkdir(lower_dirs[0])
            if len(lower_dirs) > MAX_OVERLAY_LOWERS:
                flat = os.path.join(scratch, "flat")
                cut = len(lower_dirs) - MAX_OVERLAY_LOWERS + 1
                apply_layers([Path(p) for p in lower_dirs[:cut]], Path(flat))
                lower_dirs = [flat, *lower_dirs[cut:]]
            dirs = [*lower_dirs, os.path.abspath(upper), os.path.abspath(workdir)]
            if any(c in d for d in dirs for c in ",:"):
                raise SnapshotError("fuse-overlayfs: a layer path contains ',' or ':'")
            opts = (f"lowerdir={':'.join(reversed(lower_dirs))},upperdir={os.path.abspath(upper)},"
                    f"workdir={os.path.abspath(workdir)}")
            res = subprocess.run([shutil.which("fuse-overlayfs") or "fuse-overlayfs", "-o", opts, target],
                                 stdin=subprocess.DEVNULL, capture_output=True, text=True)
            if res.returncode != 0:
                raise SnapshotError(f"fuse-overlayfs: {res.stderr.strip() or res.returncode}")
            try:
                yield Path(target)
            finally:
                _unmount_fuse(target)
        _normalize_fuse_upper(os.fspath(upper))
        strip_overlay_xattrs(upper)


_FUSE_XATTR_PREFIX = "user.fuseoverlayfs."
_WH_OPAQUE_FILE = ".wh..wh..opq"


def _unmount_fuse(target: str) -> None:
    try:
        umount(target)
    except OSError:
        tool = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount"
        res = subprocess.run([tool, "-u", target], stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if res.returncode != 0:
            raise SnapshotError(f"cannot unmount {target}: {res.stderr.strip()}") from None


def _normalize_fuse_upper(upper: str) -> None:
    """fuse-overlayfs' upper dir into the layer format (see `FuseOverlaySnapshotter`); dir times kept."""
    dirs = [b""] + [e.rel for e in safefs.walk(upper, sort=False, where="in a step's output") if e.is_dir]
    for rel in dirs:
        dirpath = os.path.join(upper, os.fsdecode(rel)) if rel else upper
        with os.scandir(dirpath) as it:
            filenames = [e.name for e in it if not e.is_dir(follow_symlinks=False)]
        st_dir = os.lstat(dirpath)
        changed = False
        opaque = False
        with contextlib.suppress(OSError):
            opaque = os.getxattr(dirpath, _FUSE_XATTR_PREFIX + "opaque", follow_symlinks=False) == b"y"
        for name in filenames:
            if not name.startswith(".wh."):
                continue
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            os.unlink(path)
            changed = True
            if name == _WH_OPAQUE_FILE:
                opaque = True
            elif stat.S_ISREG(st.st_mode) and name != ".wh..opq":  # a whiteout made without mknod
                hidden = os.path.join(dirpath, name[4:])
                if not os.path.lexists(hidden):
                    os.mknod(hidden, stat.S_IFCHR | 0o000, 0)
        with contextlib.suppress(OSError):
            for x in os.listxattr(dirpath, follow_symlinks=False):
                if x.startswith(_FUSE_XATTR_PREFIX):
                    os.removexattr(dirpath, x, follow_symlinks=False)
                    changed = True
        if opaque:
            os.setxattr(dirpath, opaque_xattr(), b"y")
        if changed or opaque:
            os.utime(dirpath, ns=(st_dir.st_atime_ns, st_dir.st_mtime_ns))
        for name in filenames:
            path = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                for x in os.listxattr(path, follow_symlinks=False):
                    if x.startswith(_FUSE_XATTR_PREFIX):
                        os.removexattr(path, x, follow_symlinks=False)
