"""The overlay layer format every room shares (docs/architecture.md): a whiteout is a character device
0:0, an opaque directory carries ``<prefix>opaque=y``, where the prefix is ``trusted.overlay.`` as real
root and ``user.overlay.`` inside the rootless user namespace (overlayfs mounted with ``userxattr``)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from backend.userns import in_user_namespace


def overlay_xattr_prefix() -> str:
    """`trusted.overlay.` as real root; `user.overlay.` (mount option `userxattr`) inside a user namespace,
    where trusted.* xattrs cannot be written. Layers on disk keep the namespace's own spelling (a rootless
    cache is the user's own); `layer_tree_digest` and the layer tars spell both the same way.

    Asked each time, not fixed at import: a module imported before `backend.userns.enter` would
    otherwise keep the answer of the initial namespace (`in_user_namespace` is cached until then)."""
    return "user.overlay." if in_user_namespace() else "trusted.overlay."


def opaque_xattr() -> str:
    """The xattr marking an opaque directory (``<prefix>opaque=y``) in this process's namespace."""
    return overlay_xattr_prefix() + "opaque"


OVERLAY_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")  # overlay's own, in either namespace
CANONICAL_OPAQUE_XATTR = "trusted.overlay.opaque"  # how an opaque dir counts in a layer's identity


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: str | bytes | Path) -> bool:
    try:
        return os.getxattr(path, opaque_xattr(), follow_symlinks=False) == b"y"
    except OSError:
        return False


def read_xattrs(path: str | bytes, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """The xattrs of ``path`` (never followed), minus names starting with one of ``skip``.  A
    filesystem or namespace that has none to show (ENOTSUP, EPERM) gives ``{}``; any other failure is
    raised: a layer's identity and its tar must not silently lose an xattr."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            return {}
        raise
    out = {}
    for name in names:
        if skip and name.startswith(skip):
            continue
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as e:  # removed meanwhile, or not readable here
            if e.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                raise
    return out
