"""Device nodes of an image, kept in the store without creating any.

A device node on the host is a door to hardware: a block device 8:0 readable by another user is the
disk. Images may still carry nodes (a base image's `/dev/console`, `RUN mknod`, an ADDed tar), and
an exported image must keep them to be faithful. So the store holds each one as a **placeholder**:
an empty regular file with the node's owner, mode and times, and the xattr `device_xattr()` = b"c 1:3"
(kind, major:minor). Layer tars and registry layers turn a placeholder back into a char/block entry
(`backend.oci.layertar`); `layer_tree_digest` counts it as the node it stands for; a `type=local` export
skips it (`backend.export.local`). A step of a later stage sees an empty file where Docker would
show the node — a node it could not open anyway: the device cgroup of every step denies all but
the runtime's standard devices.

Whiteouts (char 0:0) stay real nodes: overlayfs needs them, and 0:0 is no device (open() gives
ENXIO). A real node a RUN step made (rootful, `CAP_MKNOD`) lives in the step's upper dir under the
store's 0700 `tmp/` until the layer is committed, where `convert_tree` turns it into a placeholder.
"""

from __future__ import annotations

import contextlib
import os
import stat

from backend.fs import safefs
from backend.userns import in_user_namespace


def device_xattr() -> str:
    """trusted.* as real root (a step, without CAP_SYS_ADMIN, cannot forge it); user.* inside a user
    namespace (rootless), where trusted.* cannot be written.  Asked each time, not fixed at import
    (see ``backend.fs.layerformat.overlay_xattr_prefix``)."""
    return "user.irctl.device" if in_user_namespace() else "trusted.irctl.device"


XATTR_NAMES = ("trusted.irctl.", "user.irctl.")  # never taken from a tar, never written into one


def is_device(mode: int, rdev: int) -> bool:
    """A real device node, whiteouts (char 0:0) excluded."""
    return (stat.S_ISCHR(mode) and rdev != 0) or stat.S_ISBLK(mode)


def encode(mode: int, rdev: int) -> bytes:
    return b"%s %d:%d" % (b"c" if stat.S_ISCHR(mode) else b"b", os.major(rdev), os.minor(rdev))


def decode(value: bytes) -> tuple[int, int] | None:
    """(S_IFCHR|S_IFBLK, rdev) from an xattr value, None when it is not one of ours."""
    try:
        kind, nums = value.split(b" ")
        major, minor = (int(n) for n in nums.split(b":"))
    except ValueError:
        return None
    if kind not in (b"c", b"b") or not (0 <= major < 1 << 12 and 0 <= minor < 1 << 20):
        return None
    return (stat.S_IFCHR if kind == b"c" else stat.S_IFBLK), os.makedev(major, minor)


def placeholder_of(path_or_fd: bytes | str | int, st: os.stat_result) -> tuple[int, int] | None:
    """(kind, rdev) when `path_or_fd` (lstat `st`) is a placeholder: an empty regular file with our xattr."""
    if not stat.S_ISREG(st.st_mode) or st.st_size != 0:
        return None
    try:
        if isinstance(path_or_fd, int):
            value = os.getxattr(path_or_fd, device_xattr())
        else:
            value = os.getxattr(path_or_fd, device_xattr(), follow_symlinks=False)
    except OSError:
        return None
    return decode(value)


def make_placeholder(dir_fd: int, name: bytes | str, mode: int, rdev: int, *, exclusive: bool = True) -> int:
    """Create the placeholder `name` in `dir_fd` for a node of `mode` (type and permission bits) and
    `rdev`; returns its fd (the caller sets owner and times, then closes it). Permission bits are the
    node's, minus setuid/setgid (a file, unlike a node, could be run)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
    try:
        os.setxattr(fd, device_xattr(), encode(mode, rdev))
        os.fchmod(fd, stat.S_IMODE(mode) & 0o1777)
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_placeholder_at(path: str | bytes, mode: int, rdev: int) -> None:
    """`make_placeholder` by path (its parent is one irctl made or checked); leaves owner and times."""
    head, base = os.path.split(os.fsencode(path))
    pfd = os.open(head or b".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.close(make_placeholder(pfd, base, mode, rdev))
    finally:
        os.close(pfd)


def convert_tree(root: str | os.PathLike) -> int:
    """Replace every real device node below `root` (a finished upper dir) with its placeholder,
    keeping owner, mode, times and xattrs; returns how many."""
    converted = 0
    for e in safefs.walk(root, sort=False, where="in a step's output"):
        if not is_device(e.st.st_mode, e.st.st_rdev):
            continue
        parent = os.fstat(e.dir_fd)
        xattrs = {}
        with contextlib.suppress(OSError):
            for x in os.listxattr(e.xpath, follow_symlinks=False):
                with contextlib.suppress(OSError):
                    xattrs[x] = os.getxattr(e.xpath, x, follow_symlinks=False)
        os.unlink(e.name, dir_fd=e.dir_fd)
        fd = make_placeholder(e.dir_fd, e.name, e.st.st_mode, e.st.st_rdev)
        try:
            os.fchown(fd, e.st.st_uid, e.st.st_gid)
            os.fchmod(fd, stat.S_IMODE(e.st.st_mode) & 0o1777)
            for x, v in xattrs.items():
                if not x.startswith(XATTR_NAMES):
                    with contextlib.suppress(OSError):
                        os.setxattr(fd, x, v)
            os.utime(fd, ns=(e.st.st_atime_ns, e.st.st_mtime_ns))
        finally:
            os.close(fd)
        os.utime(e.dir_fd, ns=(parent.st_atime_ns, parent.st_mtime_ns))
        converted += 1
    return converted
