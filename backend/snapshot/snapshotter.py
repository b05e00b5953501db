"""Snapshots: a writable root made of read-only layers plus a fresh upper dir that becomes the new layer.

A layer is a directory in overlayfs upper-dir format (docs/architecture.md): a whiteout is a character
device 0:0, an opaque directory carries `trusted.overlay.opaque=y`. Two snapshotters share one interface:

* `OverlaySnapshotter` mounts overlayfs (lowerdir/upperdir/workdir); the kernel writes the diff for us.
* `CopySnapshotter` is the fallback where overlayfs cannot be mounted (e.g. the cache dir itself lives
  on overlayfs): it materialises the lowers, records a metadata snapshot, and writes the diff on exit.

Both leave in `upper` exactly the diff in layer format, with overlay's private xattrs stripped, so the same
operations give the same `layer_tree_digest` whichever is used. While mounted, a snapshot's private scratch
dir (beside `workdir`) holds a lock, so `reap_stale_snapshots` can unmount what a killed process left behind
without touching snapshots other processes are using. Rootless (inside the user namespace of
`backend.userns`): overlayfs is mounted with `userxattr`, so `XATTR_PREFIX` is `user.overlay.`; where the
kernel refuses, `FuseOverlaySnapshotter` (fuse-overlayfs) or the copy fallback take over.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from backend.errors import BackendError
from backend.fs import devnodes, safefs
from backend.fs.layerformat import CANONICAL_OPAQUE_XATTR, OPAQUE_XATTR, XATTR_PREFIX, is_opaque, is_whiteout, read_xattrs


MAX_OVERLAY_LOWERS = 500  # OVL_MAX_STACK
_MOUNT_DATA_LIMIT = 4000  # mount(2) copies at most one page of options


class SnapshotError(BackendError):
    """A snapshot could not be mounted, unmounted or diffed."""


def _copy_meta(src: str, dst: str, st: os.stat_result, *, xattrs: bool = True, times: bool = True) -> None:
    """Owner, mode, xattrs (minus overlay's private ones) and times of `src` onto `dst`."""
    os.lchown(dst, st.st_uid, st.st_gid)  # before chmod/xattrs: chown clears setuid and security.capability
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    if xattrs:
        for name, value in read_xattrs(src).items():
            if not name.startswith(XATTR_PREFIX):
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
        _copy_meta(src, dst, st)
        return
    elif stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):  # a whiteout or a fifo
        os.mknod(dst, mode, st.st_rdev)
    elif stat.S_ISSOCK(mode):
        return  # sockets are not content
    _copy_meta(src, dst, st)


_copy_entry = copy_entry  # the earlier private name, still imported elsewhere


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
            _copy_meta(src, dst, st)
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
        _copy_entry(s, d, st)
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
    with contextlib.suppress(OSError):
        for x in os.listxattr(p, **nofollow):
            if x.startswith(XATTR_PREFIX) and x != OPAQUE_XATTR:
                os.removexattr(p, x, **nofollow)


def layer_tree_digest(layer_dir: Path, known: dict[str, tuple[str, int, int, int]] | None = None) -> str:
    """Content identity of a layer: sha256 over its sorted entries, independent of mtimes and inode numbers.

    Each entry contributes its relative path, type, permission bits, uid, gid, xattrs, symlink target,
    content sha256 (regular files) and device numbers (char/block devices, so whiteouts count). The layer
    root itself is not included. Hard links hash as independent files. `known` maps a relative path to
    (sha256 hex, size, mtime_ns, ctime_ns) noted when the file was written (`fileops.apply_actions`); a
    file whose stat still matches is not read again."""
    h = hashlib.sha256(b"irctl-layer-tree-v1\0")
    root = os.fspath(layer_dir)
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
        if kind == "f" and st.st_size == 0 and devnodes.DEVICE_XATTR in found:
            node = devnodes.decode(found.pop(devnodes.DEVICE_XATTR))
            if node is not None:  # a placeholder counts as the node it stands for
                kind = "c" if node[0] == stat.S_IFCHR else "b"
                content, dev = "", f"{os.major(node[1])}:{os.minor(node[1])}"
        xattrs = ",".join(f"{k}={v.hex()}" for k, v in sorted(
            (CANONICAL_OPAQUE_XATTR if k == OPAQUE_XATTR else k, v) for k, v in found.items()))
        fields = [kind, f"{stat.S_IMODE(mode):o}", str(st.st_uid), str(st.st_gid), xattrs, link, content, dev]
        records.append((entry.rel, "\0".join(fields).encode("utf-8", "surrogateescape")))
    for path, rec in sorted(records):
        h.update(path + b"\0" + rec + b"\0\n")
    return "sha256:" + h.hexdigest()


# ---------------------------------------------------------------------------------------------- snapshotters

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
_ABANDONED_AFTER = 600  # seconds: a scratch dir that never got its lock is abandoned after this


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
        _rmtree_scratch(path)
    except BaseException:
        with contextlib.suppress(SnapshotError):
            _rmtree_scratch(path)
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


def reap_stale_snapshots(parent: Path) -> list[str]:
    """Unmount and remove snapshot scratch dirs under `parent` (the workdirs' parent, e.g. the cache's tmp/)
    left by a process that died while a snapshot was mounted. Safe while other processes use `parent`."""
    reaped = []
    for path, fd in abandoned_dirs(parent, SCRATCH_PREFIX):
        try:
            target = os.path.join(path, "rootfs")
            if os.path.ismount(target):
                umount(target)
            _rmtree_scratch(path)
            reaped.append(path)
        finally:
            os.close(fd)
    return reaped


def _scratch(workdir: Path) -> contextlib.AbstractContextManager[str]:
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    return held_dir(workdir.parent, f"{SCRATCH_PREFIX}{workdir.name}.")


def _rmtree_scratch(path: str) -> None:
    if os.path.ismount(os.path.join(path, "rootfs")):  # never delete through a live mount
        raise SnapshotError(f"{path}/rootfs is still mounted; not removing it")
    with contextlib.suppress(FileNotFoundError):
        safefs.rmtree(path)


@functools.cache
def _libc() -> ctypes.CDLL:
    # libc is already loaded: find_library("c") would run `ldconfig -p` (~25 ms), once per thread
    # that gets here first at the same time (the first RUNs of a build all mount at once)
    return ctypes.CDLL(None, use_errno=True)


_MNT_DETACH = 2
_SYS_FSOPEN, _SYS_FSCONFIG, _SYS_FSMOUNT, _SYS_MOVE_MOUNT = 430, 431, 432, 429  # same on every arch
_FSCONFIG_SET_FLAG, _FSCONFIG_SET_STRING, _FSCONFIG_CMD_CREATE = 0, 1, 6
_MOVE_MOUNT_F_EMPTY_PATH = 0x4


def _check(ret: int, what: str) -> int:
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")
    return ret


def _mount_overlay_data(target: str, data: str) -> None:
    _check(_libc().mount(b"overlay", target.encode(), b"overlay", 0, data.encode()), f"mount overlay on {target}")


def _mount_overlay_fsconfig(target: str, lowers: Sequence[str], options: dict[str, str | None]) -> None:
    """Mount with the new mount API, appending lowers one by one (`lowerdir+`, Linux >= 6.8)."""
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    fs = _check(libc.syscall(_SYS_FSOPEN, b"overlay", 1), "fsopen overlay")  # FSOPEN_CLOEXEC
    try:
        def setstr(key: str, value: str) -> None:
            _check(libc.syscall(_SYS_FSCONFIG, fs, _FSCONFIG_SET_STRING, key.encode(), value.encode(), 0),
                   f"fsconfig {key}={value}")
        for lower in lowers:  # fsconfig wants the topmost first, like the lowerdir string
            setstr("lowerdir+", lower)
        for k, v in options.items():
            if v is None:  # a flag such as userxattr
                _check(libc.syscall(_SYS_FSCONFIG, fs, _FSCONFIG_SET_FLAG, k.encode(), None, 0), f"fsconfig {k}")
            else:
                setstr(k, v)
        _check(libc.syscall(_SYS_FSCONFIG, fs, _FSCONFIG_CMD_CREATE, None, None, 0), "fsconfig create")
        mnt = _check(libc.syscall(_SYS_FSMOUNT, fs, 1, 0), "fsmount")  # FSMOUNT_CLOEXEC
        try:
            _check(libc.syscall(_SYS_MOVE_MOUNT, mnt, b"", -100, target.encode(), _MOVE_MOUNT_F_EMPTY_PATH),
                   "move_mount")
        finally:
            os.close(mnt)
    finally:
        os.close(fs)


def umount(target: str | Path, *, lazy_fallback: bool = True) -> None:
    path = os.fspath(target).encode()
    if _libc().umount2(path, 0) == 0:
        return
    e = ctypes.get_errno()
    if e == errno.EBUSY and lazy_fallback and _libc().umount2(path, _MNT_DETACH) == 0:
        return
    raise OSError(e, f"umount {target}: {os.strerror(e)}")


def _escape_lower(path: str) -> str:
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


class OverlaySnapshotter(Snapshotter):
    """Kernel overlayfs. Many lowers: the page-sized mount(2) option string, else `lowerdir+` through
    fsconfig, else (old kernels, or > 500 layers) the bottom layers are flattened into one scratch lower."""

    name = "overlay"
    # Plain upper-dir format only: no redirect xattrs (a renamed lower dir is copied, as by `mv` on EXDEV) and
    # none followed from a lower (a hostile layer could carry one), no metacopy-only files, no inode index.
    options: dict[str, str | None] = {"redirect_dir": "nofollow", "metacopy": "off", "index": "off", "xino": "off",
                                      **({"userxattr": None} if XATTR_PREFIX.startswith("user.") else {})}
    # `volatile` (Linux >= 5.10): no sync of the whole upper filesystem at every unmount (2-50 ms, a
    # syncfs of whatever else is dirty there) and no-op fsyncs inside a RUN.  Snapshots are scratch:
    # a layer is made durable by the cache's fsync_tree when it is committed, after the unmount.
    volatile: dict[str, str | None] = {"volatile": None}

    @contextlib.contextmanager
    def mounted(self, lowers: Sequence[Path], upper: Path, workdir: Path) -> Iterator[Path]:
        Path(upper).mkdir(parents=True, exist_ok=True)
        with _scratch(workdir) as scratch:
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
        with _scratch(workdir) as scratch:
            target = os.path.join(scratch, "rootfs")
            os.mkdir(target)
            lower_dirs = [os.path.abspath(p) for p in lowers]
            while len(lower_dirs) < 2:  # without an upper, overlayfs wants two lowers
                empty = os.path.join(scratch, f"empty{len(lower_dirs)}")
                os.mkdir(empty)
                lower_dirs.insert(0, empty)
            self._mount_with(scratch, target, lower_dirs, None, None, dict(self.options))
            try:
                yield Path(target)
            finally:
                umount(target)

    def _mount(self, scratch: str, target: str, lower_dirs: list[str], upper: Path, workdir: Path) -> None:
        options = {**self.options, **type(self).volatile}
        try:
            self._mount_with(scratch, target, lower_dirs, upper, workdir, options)
        except OSError as e:
            if e.errno != errno.EINVAL or not type(self).volatile:
                raise
            type(self).volatile = {}  # a kernel without `volatile`
            self._mount_with(scratch, target, lower_dirs, upper, workdir, dict(self.options))

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
            _mount_overlay_data(target, data)
            return
        try:
            _mount_overlay_fsconfig(target, top_first, opts)
        except OSError:  # no `lowerdir+` (Linux < 6.8): one flattened lower
            flat = os.path.join(scratch, "flat-all")
            apply_layers([Path(p) for p in lower_dirs], Path(flat))
            _mount_overlay_data(target, ",".join([f"lowerdir={_escape_lower(flat)}", *tail]))


class FuseOverlaySnapshotter(Snapshotter):
    """fuse-overlayfs, where the kernel's overlayfs cannot be mounted (rootless on kernels < 5.11, or a
    filesystem without user xattrs). Its upper dir is overlay's format except for its own opaque markers
    (`user.fuseoverlayfs.opaque`, a `.wh..wh..opq` file) and, where mknod is refused, `.wh.NAME` files
    for whiteouts: `_normalize_fuse_upper` turns those into the layer format after unmounting."""

    name = "fuse-overlayfs"

    @contextlib.contextmanager
    def mounted(self, lowers: Sequence[Path], upper: Path, workdir: Path) -> Iterator[Path]:
        Path(upper).mkdir(parents=True, exist_ok=True)
        with _scratch(workdir) as scratch:
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
            os.setxattr(dirpath, OPAQUE_XATTR, b"y")
        if changed or opaque:
            os.utime(dirpath, ns=(st_dir.st_atime_ns, st_dir.st_mtime_ns))
        for name in filenames:
            path = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                for x in os.listxattr(path, follow_symlinks=False):
                    if x.startswith(_FUSE_XATTR_PREFIX):
                        os.removexattr(path, x, follow_symlinks=False)


class CopySnapshotter(Snapshotter):
    """Fallback without overlayfs: copy the lowers into a scratch root, diff it against a metadata snapshot."""

    name = "copy"

    @contextlib.contextmanager
    def mounted(self, lowers: Sequence[Path], upper: Path, workdir: Path) -> Iterator[Path]:
        with _scratch(workdir) as scratch:
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
                    os.setxattr(os.path.join(upper, r), OPAQUE_XATTR, b"y")
                stack.append((r, True))
                continue
            if old is not None and old == _meta(st):
                continue
            ensure_dir(rel)
            _copy_entry(e.path, os.path.join(upper, r), st)
        if fresh:
            continue
        gone = children.get(rel, set()) - {e.name for e in entries}
        for name in sorted(gone):
            ensure_dir(rel)
            os.mknod(os.path.join(upper, rel, name), stat.S_IFCHR | 0o000, 0)
    for r in sorted(made, reverse=True):  # children first so parent mtimes stick
        src = os.path.join(root, r)
        _copy_meta(src, os.path.join(upper, r), os.lstat(src))


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
    statx = getattr(_libc(), "statx", None)
    if statx is None or statx(-100, os.fsencode(path), 0x100, 0x800, ctypes.byref(buf)) != 0:
        return None  # AT_FDCWD, AT_SYMLINK_NOFOLLOW, STATX_BTIME
    if not buf.stx_mask & 0x800:
        return None
    return buf.stx_btime.tv_sec * 1_000_000_000 + buf.stx_btime.tv_nsec


def _born_after(path: str, since: int | None) -> bool:
    born = _btime_ns(path) if since is not None else None
    return born is not None and born > since


# ---------------------------------------------------------------------------------------------- detection

@functools.cache
def _overlay_works(tmp_root: str, kind: str = "overlay") -> bool:
    """Probe: a deleted file becomes a whiteout, a re-created dir an opaque one, in the upper dir."""
    snap = FuseOverlaySnapshotter() if kind == "fuse-overlayfs" else OverlaySnapshotter()
    if kind == "fuse-overlayfs" and (shutil.which("fuse-overlayfs") is None or not os.access("/dev/fuse", os.R_OK | os.W_OK)):
        return False
    try:
        base = tempfile.mkdtemp(prefix=".overlay-probe.", dir=tmp_root)
    except OSError:
        return False
    try:
        for d in ("lower/d", "upper", "work", "merged"):
            os.makedirs(os.path.join(base, d))
        Path(base, "lower", "f").write_bytes(b"x")
        Path(base, "lower", "d", "g").write_bytes(b"x")
        with snap.mounted([Path(base, "lower")], Path(base, "upper"), Path(base, "work")) as root:
            os.unlink(root / "f")
            os.unlink(root / "d" / "g")
            os.rmdir(root / "d")
            os.mkdir(root / "d")
        return is_whiteout(os.lstat(os.path.join(base, "upper", "f"))) and is_opaque(os.path.join(base, "upper", "d"))
    except (OSError, SnapshotError):
        return False
    finally:
        with contextlib.suppress(OSError, SnapshotError):
            _rmtree_scratch(base)


def _probe_key(tmp_root: Path) -> str | None:
    """What a positive overlay probe depends on: this boot of this kernel, the filesystem, who we
    are and with which user-namespace id maps (rootless mounts use ``userxattr``)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        # the id maps, not the namespace's inode: a rootless build makes a new namespace every
        # time, with the same maps (the user's subordinate ids), so the answer is the same
        userns = " ".join(w for m in ("uid", "gid") for w in Path(f"/proc/self/{m}_map").read_text().split())
        dev = os.stat(tmp_root).st_dev
    except OSError:
        return None
    return f"overlay-probe-v1 {os.uname().release} {boot} {dev} {os.geteuid()} {userns}"


def detect_snapshotter(tmp_root: Path, *, probe_dir: Path | None = None, memo: Path | None = None) -> Snapshotter:
    """The best snapshotter for layers stored under `tmp_root`.

    Kernel overlayfs first, then fuse-overlayfs, then copying. `$IRCTL_SNAPSHOTTER=overlay|fuse-overlayfs|copy`
    overrides the probe.  `probe_dir` (same filesystem): where the probe mounts, e.g. a build's
    work dir, which the next build reaps if this one is killed mid-probe (default `tmp_root`).
    `memo`: a file remembering a positive overlay probe for this boot, filesystem and user (see
    `_probe_key`), so later builds skip the probe's mount (10-20 ms); other results are not kept."""
    forced = os.environ.get("IRCTL_SNAPSHOTTER", "").strip().lower()
    if forced == "copy":
        return CopySnapshotter()
    if forced == "overlay":
        return OverlaySnapshotter()
    if forced == "fuse-overlayfs":
        return FuseOverlaySnapshotter()
    if forced:
        raise SnapshotError(f"IRCTL_SNAPSHOTTER={forced!r}: expected 'overlay', 'fuse-overlayfs' or 'copy'")
    Path(tmp_root).mkdir(parents=True, exist_ok=True)
    key = _probe_key(tmp_root) if memo is not None else None
    if key is not None:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if Path(memo).read_text() == key:  # type: ignore[arg-type]
                return OverlaySnapshotter()
    for kind, cls in (("overlay", OverlaySnapshotter), ("fuse-overlayfs", FuseOverlaySnapshotter)):
        if _overlay_works(os.path.abspath(probe_dir or tmp_root), kind):
            if kind == "overlay" and key is not None:
                with contextlib.suppress(OSError):
                    fd, tmp = tempfile.mkstemp(prefix=".tmp-probe-", dir=probe_dir or tmp_root)
                    with os.fdopen(fd, "w") as f:
                        f.write(key)
                    os.replace(tmp, memo)  # type: ignore[arg-type]
            return cls()
    return CopySnapshotter()
