"""Snapshots: a writable root made of read-only layers plus a fresh upper dir that becomes the new layer.

Three snapshotters share the interface `Snapshotter` (`backend.snapshot.detect` picks one):

* `OverlaySnapshotter` (``overlay``) mounts overlayfs (lowerdir/upperdir/workdir); the kernel writes the diff.
* `FuseOverlaySnapshotter` (``fuse``): fuse-overlayfs where the kernel refuses (rootless on old kernels).
* `CopySnapshotter` (``copydiff``) is the fallback where no overlay can be mounted (e.g. the cache dir
  itself lives on overlayfs): it materialises the lowers and writes the diff on exit.

All leave in `upper` exactly the diff in layer format (``backend.fs.layerformat``), with overlay's
private xattrs stripped, so the same operations give the same `layer_tree_digest` whichever is used.
A snapshot mounts in a private scratch dir beside `workdir` (`scratch_dir`); what a killed build
left mounted there is unmounted by the store's crash recovery (``backend.store.recovery``).
`held_dir`/`abandoned_dirs` are the dirs that carry their owner's lock (``backend.runtime``'s
container bundles): one whose lock is free was left by a dead process.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from backend.errors import BackendError
from backend.fs import safefs


class SnapshotError(BackendError):
    """A snapshot could not be mounted, unmounted or diffed."""


class Snapshotter:
    """Interface: `with s.mounted(lowers, upper, workdir) as rootfs:` yields a writable merged root."""

    name = "abstract"

    @contextlib.contextmanager
    def mounted(self, lowers: Sequence[Path], upper: Path, workdir: Path) -> Iterator[Path]:
        """Lowers bottom first; `upper` (created if missing) receives the diff; `workdir` is scratch space
        on the same filesystem as `upper` (private dirs are made beside it, in its parent)."""
        raise NotImplementedError
        yield Path()  # pragma: no cover

    @contextlib.contextmanager
    def readonly(self, lowers: Sequence[Path], workdir: Path) -> Iterator[Path]:
        """A view of `lowers` (bottom first) to read from, never to write to; `workdir` as for
        `mounted` (its parent is the caller's, who removes it).  By default `mounted` with a
        throwaway upper dir beside `workdir`."""
        with self.mounted(lowers, Path(workdir).with_name(Path(workdir).name + ".upper"), workdir) as root:
            yield root


SCRATCH_PREFIX = ".irctl-snap."
_LOCK = ".lock"
_ABANDONED_AFTER = 600  # seconds: a held dir that never got its lock is abandoned after this


@contextlib.contextmanager
def held_dir(parent: Path, prefix: str) -> Iterator[str]:
    """A fresh directory under `parent` that carries a lock (flock on `<dir>/.lock`) while it is in use.

    The lock appears already held (locked under a temporary name, then renamed into place), so
    `abandoned_dirs` can tell a dir whose owner died (lock free) from one still in use. Removes the dir
    on exit, except a `rootfs` in it that is still a mount point (then it raises)."""
    Path(parent).mkdir(parents=True, exist_ok=True)
    path = tempfile.mkdtemp(prefix=prefix, dir=parent)
    tmp_lock = os.path.join(path, ".lock.tmp")
    fd = os.open(tmp_lock, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(tmp_lock, os.path.join(path, _LOCK))
        yield path
        rmtree_scratch(path)
    except BaseException:
        with contextlib.suppress(SnapshotError):
            rmtree_scratch(path)
        raise
    finally:
        os.close(fd)


def abandoned_dirs(parent: Path, prefix: str) -> Iterator[tuple[str, int]]:
    """Dirs made by `held_dir(parent, prefix)` whose owner is gone; yields (path, lock fd) with the lock
    held by the caller, who must close the fd."""
    try:
        entries = [e for e in os.scandir(parent) if e.name.startswith(prefix) and e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return
    for entry in entries:
        try:
            fd = os.open(os.path.join(entry.path, _LOCK), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                if time.time() - entry.stat(follow_symlinks=False).st_mtime > _ABANDONED_AFTER:
                    fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                    yield entry.path, fd
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        yield entry.path, fd


@contextlib.contextmanager
def scratch_dir(workdir: Path) -> Iterator[str]:
    """A private dir beside `workdir` (created if missing) for a snapshot's mount point and flattened
    lowers; removed on exit, unless its `rootfs` is still mounted (then it raises, or on an error
    leaves it for the crash recovery)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{workdir.name}.", dir=workdir.parent)
    try:
        yield path
    except BaseException:
        with contextlib.suppress(SnapshotError):
            rmtree_scratch(path)
        raise
    rmtree_scratch(path)


def rmtree_scratch(path: str) -> None:
    if os.path.ismount(os.path.join(path, "rootfs")):  # never delete through a live mount
        raise SnapshotError(f"{path}/rootfs is still mounted; not removing it")
    with contextlib.suppress(FileNotFoundError):
        safefs.rmtree(path)
