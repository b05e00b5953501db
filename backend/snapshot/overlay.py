"""Kernel overlayfs as a snapshotter: the kernel writes the diff into the upper dir, so a step costs
one mount.  Its options keep the upper dir in the plain layer format (no redirects, no metacopy),
spell xattrs `user.overlay.*` inside a user namespace (`userxattr`), and skip the syncs of a scratch
mount (`volatile`); layers beyond one page of mount options or overlay's stack limit take the new
mount API or a flattened lower."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from backend.fs.layerformat import overlay_xattr_prefix
from backend.snapshot.base import Snapshotter, scratch_dir
from backend.snapshot.layertree import apply_layers, strip_overlay_xattrs
from backend.snapshot.mount import mount_overlay_data, mount_overlay_fsconfig, umount

MAX_OVERLAY_LOWERS = 500  # OVL_MAX_STACK
_MOUNT_DATA_LIMIT = 4000  # mount(2) copies at most one page of options


def _escape_lower(path: str) -> str:
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


class OverlaySnapshotter(Snapshotter):
    """Kernel overlayfs. Many lowers: the page-sized mount(2) option string, else `lowerdir+` through
    fsconfig, else (old kernels, or > 500 layers) the bottom layers are flattened into one scratch lower."""

    name = "overlay"

    def __init__(self) -> None:
        # `volatile` (Linux >= 5.10): no sync of the whole upper filesystem at every unmount (2-50 ms, a
        # syncfs of whatever else is dirty there) and no-op fsyncs inside a RUN.  Snapshots are scratch:
        # a layer is made durable by the cache's fsync_tree when it is committed, after the unmount.
        # Dropped after the first mount that refuses it (an older kernel), for this snapshotter's build.
        self.volatile = True

    @staticmethod
    def options() -> dict[str, str | None]:
        """Plain upper-dir format only: no redirect xattrs (a renamed lower dir is copied, as by `mv` on
        EXDEV) and none followed from a lower (a hostile layer could carry one), no metacopy-only files,
        no inode index; `userxattr` inside a user namespace (asked at mount time, not at import)."""
        return {"redirect_dir": "nofollow", "metacopy": "off", "index": "off", "xino": "off",
                **({"userxattr": None} if overlay_xattr_prefix().startswith("user.") else {})}

    @contextlib.contextmanager
    def mounted(self, lowers: Sequence[Path], upper: Path, workdir: Path) -> Iterator[Path]:
        Path(upper).mkdir(parents=True, exist_ok=True)
        with scratch_dir(workdir) as scratch:
            target = os.path.join(scratch, "rootfs")
            os.mkdir(target)
            self._mount(scratch, target, [os.path.abspath(p) for p in lowers], upper, workdir)
            try:
                yield Path(target)
            finally:
                umount(target)
        strip_overlay_xattrs(upper)

    @contextlib.contextmanager
    def readonly(self, lowers: Sequence[Path], workdir: Path) -> Iterator[Path]:
        """A read-only overlay of the lowers alone: no upper or work dir to create, fill and remove,
        and none of the checks the kernel makes on a writable upper (a third of the cost)."""
        with scratch_dir(workdir) as scratch:
            target = os.path.join(scratch, "rootfs")
            os.mkdir(target)
            lower_dirs = [os.path.abspath(p) for p in lowers]
            while len(lower_dirs) < 2:  # without an upper, overlayfs wants two lowers
                empty = os.path.join(scratch, f"empty{len(lower_dirs)}")
                os.mkdir(empty)
                lower_dirs.insert(0, empty)
            self._mount_with(scratch, target, lower_dirs, None, None, self.options())
            try:
                yield Path(target)
            finally:
                umount(target)

    def _mount(self, scratch: str, target: str, lower_dirs: list[str], upper: Path, workdir: Path) -> None:
        if self.volatile:
            try:
                self._mount_with(scratch, target, lower_dirs, upper, workdir, {**self.options(), "volatile": None})
                return
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                self.volatile = False  # a kernel without `volatile`
        self._mount_with(scratch, target, lower_dirs, upper, workdir, self.options())

    def _mount_with(self, scratch: str, target: str, lower_dirs: list[str], upper: Path | None,
                    workdir: Path | None, options: dict[str, str | None]) -> None:
        if not lower_dirs:
            empty = os.path.join(scratch, "empty")
            os.makedirs(empty, exist_ok=True)
            lower_dirs = [empty]
        if len(lower_dirs) > MAX_OVERLAY_LOWERS:
            flat = os.path.join(scratch, "flat")
            cut = len(lower_dirs) - MAX_OVERLAY_LOWERS + 1
            apply_layers([Path(p) for p in lower_dirs[:cut]], Path(flat))
            lower_dirs = [flat, *lower_dirs[cut:]]
        top_first = list(reversed(lower_dirs))
        opts = {"upperdir": os.path.abspath(upper), "workdir": os.path.abspath(workdir), **options} \
            if upper is not None and workdir is not None else dict(options)  # no upper: a read-only mount
        tail = [k if v is None else f"{k}={_escape_lower(v)}" for k, v in opts.items()]  # None: a flag
        data = ",".join([f"lowerdir={':'.join(map(_escape_lower, top_first))}", *tail])
        if len(data) < _MOUNT_DATA_LIMIT:
            mount_overlay_data(target, data)
            return
        try:
            mount_overlay_fsconfig(target, top_first, opts)
        except OSError:  # no `lowerdir+` (Linux < 6.8): one flattened lower
            flat = os.path.join(scratch, "flat-all")
            apply_layers([Path(p) for p in lower_dirs], Path(flat))
            mount_overlay_data(target, ",".join([f"lowerdir={_escape_lower(flat)}", *tail]))
