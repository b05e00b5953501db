"""The destination root of file actions: a path resolved inside it as chroot(2) would, missing
parents created with the action's owner and time, and owners looked up in the root's own
/etc/passwd and /etc/group (BuildKit ``readUser``)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from backend.fileops.copy import DirTree, FileOpError
from backend.fileops.treepaths import resolve
from backend.fs.userdb import resolve_user
from ir.ops import Owner


def resolve_owner(root: str | Path, owner: Owner | None) -> tuple[int, int] | None:
    """``owner`` as uid, gid, names looked up in ``root``'s /etc/passwd and /etc/group (inside it).

    None stays None (keep the source's owner).  A numeric user without a group gives gid = uid
    (BuildKit ``readUser``); a named user without a group gets its primary group."""
    if owner is None:
        return None
    user, group = owner.user.strip(), owner.group.strip()
    if not user:
        uid, gid = 0, 0
    elif user.isascii() and user.isdigit():
        uid = gid = resolve_user(Path(root), f"{user}:0").uid  # (range-checked)
    else:
        found = resolve_user(Path(root), user)
        uid, gid = found.uid, found.gid
    if group:
        numeric = group.isascii() and group.isdigit()
        gid = resolve_user(Path(root), f"0:{group}" if numeric else f"{uid}:{group}", fast_path=numeric).gid
    return uid, gid


class Dest:
    """The destination root: resolution inside it and directory creation with owner and times."""

    def __init__(self, root: str, ids: tuple[int, int] | None, ts_ns: int | None) -> None:
        self.root = root
        self.tree = DirTree(Path(root))
        self.ids = ids or (0, 0)
        self.ts_ns = ts_ns
        self.created: list[str] = []

    def host(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def resolve(self, path: str, follow_final: bool = True) -> str:
        return resolve(self.tree, path, follow_final=follow_final)

    def mkdir_all(self, rel: str, display: str, mode: int = 0o755) -> None:
        """Create ``rel`` (already resolved) and its missing parents: ``mode``, owner, timestamp."""
        current = self.root
        for part in rel.split("/") if rel else []:
            current = os.path.join(current, part)
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                os.mkdir(current, 0o700)
                os.lchown(current, *self.ids)
                os.chmod(current, mode)
                self.created.append(current)
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise FileOpError(f"cannot create directory {display}: {rel_display(self.root, current)} "
                                  "exists and is not a directory", display)

    def finish(self) -> None:
        if self.ts_ns is not None:
            for path in reversed(self.created):
                os.utime(path, ns=(self.ts_ns, self.ts_ns), follow_symlinks=False)


def rel_display(root: str, host: str) -> str:
    return "/" + os.path.relpath(host, root) if host != root else "/"


def time_ns(ts: int) -> int | None:
    """An action's ``timestamp`` (seconds; negative: none) in ns."""
    return ts * 1_000_000_000 if ts >= 0 else None
