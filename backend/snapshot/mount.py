"""mount(2), the new mount API and umount(2) through libc, for the overlay snapshotters, and the
crash recovery's unmount of whatever a killed build left mounted (``unmount_below``)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
from collections.abc import Sequence
from pathlib import Path


@functools.cache
def libc() -> ctypes.CDLL:
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


def mount_overlay_data(target: str, data: str) -> None:
    _check(libc().mount(b"overlay", target.encode(), b"overlay", 0, data.encode()), f"mount overlay on {target}")


def mount_overlay_fsconfig(target: str, lowers: Sequence[str], options: dict[str, str | None]) -> None:
    """Mount with the new mount API, appending lowers one by one (`lowerdir+`, Linux >= 6.8)."""
    c = libc()
    c.syscall.restype = ctypes.c_long
    fs = _check(c.syscall(_SYS_FSOPEN, b"overlay", 1), "fsopen overlay")  # FSOPEN_CLOEXEC
    try:
        def setstr(key: str, value: str) -> None:
            _check(c.syscall(_SYS_FSCONFIG, fs, _FSCONFIG_SET_STRING, key.encode(), value.encode(), 0),
                   f"fsconfig {key}={value}")
        for lower in lowers:  # fsconfig wants the topmost first, like the lowerdir string
            setstr("lowerdir+", lower)
        for k, v in options.items():
            if v is None:  # a flag such as userxattr
                _check(c.syscall(_SYS_FSCONFIG, fs, _FSCONFIG_SET_FLAG, k.encode(), None, 0), f"fsconfig {k}")
            else:
                setstr(k, v)
        _check(c.syscall(_SYS_FSCONFIG, fs, _FSCONFIG_CMD_CREATE, None, None, 0), "fsconfig create")
        mnt = _check(c.syscall(_SYS_FSMOUNT, fs, 1, 0), "fsmount")  # FSMOUNT_CLOEXEC
        try:
            _check(c.syscall(_SYS_MOVE_MOUNT, mnt, b"", -100, target.encode(), _MOVE_MOUNT_F_EMPTY_PATH),
                   "move_mount")
        finally:
            os.close(mnt)
    finally:
        os.close(fs)


def umount(target: str | Path, *, lazy_fallback: bool = True) -> None:
    path = os.fspath(target).encode()
    if libc().umount2(path, 0) == 0:
        return
    e = ctypes.get_errno()
    if e == errno.EBUSY and lazy_fallback and libc().umount2(path, _MNT_DETACH) == 0:
        return
    raise OSError(e, f"umount {target}: {os.strerror(e)}")



def unmount_below(path: str | os.PathLike) -> None:
    """Unmount anything a killed build left mounted below ``path`` (deepest first)."""
    prefix = os.fspath(path) + "/"
    try:
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
    except OSError:
        return
    for mp in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        with contextlib.suppress(OSError):
            umount(mp)
