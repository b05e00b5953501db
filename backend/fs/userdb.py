"""USER resolution: `name`, `uid`, `name:group`, `uid:gid` against the image's /etc/passwd and /etc/group.

BuildKit's semantics (``executor/oci/user.go`` over runc's `GetExecUser`): `uid:gid` given both as
numbers (or `root`) is taken as is, without reading the files; otherwise a numeric uid or gid need not
exist in the files, a name that is not found is an error, without an explicit group the user's primary
group comes from passwd (0 when the uid has no entry) and the supplementary groups are the groups of
/etc/group listing the user's name; with an explicit group there are none besides it. The primary gid
is always in `additional_gids` (current BuildKit's ``ensureAdditionalGids``, as containerd since
CVE-2023-25173; BuildKit v0.8 left it out, so busybox's `id` printed no `groups=` for root there).

The files belong to the image: read inside the root (symlinks never lead out), regular files only,
at most 10 MiB (BuildKit's limit; a larger file is an error rather than a truncated last line), lines
split at newlines only, ids only in ASCII digits and in range.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from backend.errors import BackendError
from backend.fs.mountpoints import DirView, LayerView, resolve_in_root

MAX_ID = 2**31 - 1
_MAX_DB_BYTES = 10 << 20


class UserError(BackendError):
    """A USER string cannot be resolved against the image."""


@dataclass(frozen=True)
class ResolvedUser:
    uid: int
    gid: int
    additional_gids: tuple[int, ...]
    home: str = "/"
    name: str | None = None


def _read_db(view: DirView | LayerView, path: str) -> list[list[str]]:
    rel = resolve_in_root(view, path)
    host = os.path.join(view.root, rel) if isinstance(view, DirView) else view.locate(rel)
    if not rel or host is None:
        return []
    try:
        fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:  # missing, a symlink (O_NOFOLLOW), unreadable
        return []
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a fifo or device must not hang or feed us
            return []
        data = f.read(_MAX_DB_BYTES + 1)
    if len(data) > _MAX_DB_BYTES:
        raise UserError(f"{path} is larger than {_MAX_DB_BYTES >> 20} MiB")
    rows = []
    for line in data.decode("utf-8", "replace").split("\n"):
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append(line.split(":"))
    return rows


def _parse_id(text: str) -> int | None:
    if not (text.isascii() and text.isdigit()):  # str.isdigit alone accepts "²", which int() refuses
        return None
    value = int(text) if len(text) <= 10 else MAX_ID + 1
    if value > MAX_ID:
        raise UserError(f"id {text if len(text) <= 20 else text[:20] + '…'} out of range (0..{MAX_ID})")
    return value


def _int(field: str) -> int | None:
    """An id field of passwd or group; None when it is not a plain in-range number."""
    if not (field.isascii() and field.isdigit()) or len(field) > 10 or int(field) > MAX_ID:
        return None  # (the length first: int() refuses strings of thousands of digits)
    return int(field)


def resolve_user(root: Path | DirView | LayerView, spec: str, *, fast_path: bool = True) -> ResolvedUser:
    """Resolve a Dockerfile USER string against the root filesystem `root` (a dir or a LayerView).
    ``fast_path=False`` looks `root` up like any name (COPY --chown does, as BuildKit's ``readUser``)."""
    view = root if isinstance(root, (DirView, LayerView)) else DirView(Path(root))
    user_arg, _, group_arg = (spec or "").strip().partition(":")
    if not user_arg:
        if group_arg:
            raise UserError(f"invalid user {spec!r}: empty user name")
        user_arg = "0"
    uid_arg = _parse_id(user_arg)
    if group_arg and fast_path:  # BuildKit's fast path (ParseUIDGID): both numeric, or `root`, read no file
        fast_uid = 0 if user_arg == "root" else uid_arg
        fast_gid = 0 if group_arg == "root" else _parse_id(group_arg)
        if fast_uid is not None and fast_gid is not None:
            return ResolvedUser(uid=fast_uid, gid=fast_gid, additional_gids=(fast_gid,))
    passwd = [r for r in _read_db(view, "/etc/passwd") if len(r) >= 4]
    match = None
    for row in passwd:
        if (uid_arg is None and row[0] == user_arg) or (uid_arg is not None and _int(row[2]) == uid_arg):
            match = row
            break
    if match is None and uid_arg is None:
        raise UserError(f"unable to find user {user_arg}: no matching entries in passwd file")
    uid = uid_arg if uid_arg is not None else _int(match[2])  # type: ignore[index]
    gid = _int(match[3]) if match is not None else 0
    if uid is None or gid is None:
        raise UserError(f"malformed passwd entry for user {user_arg}")
    home = match[5] if match is not None and len(match) > 5 and match[5] else "/"
    name = match[0] if match is not None else None

    groups = [r for r in _read_db(view, "/etc/group") if len(r) >= 3] if (group_arg or name) else []
    sgids: list[int] = []
    if group_arg:
        gid_arg = _parse_id(group_arg)
        found = next((r for r in groups if (r[0] == group_arg if gid_arg is None else _int(r[2]) == gid_arg)), None)
        if found is not None and _int(found[2]) is not None:
            gid = _int(found[2])  # type: ignore[assignment]
        elif gid_arg is not None:
            gid = gid_arg
        else:
            raise UserError(f"unable to find group {group_arg}: no matching entries in group file")
    elif name is not None:
        for r in groups:
            members = r[3].split(",") if len(r) > 3 else []
            if name in members and _int(r[2]) is not None:
                sgids.append(_int(r[2]))  # type: ignore[arg-type]
    additional = tuple(dict.fromkeys([gid, *sgids]))
    return ResolvedUser(uid=uid, gid=gid, additional_gids=additional, home=home, name=name)
