"""Rootless: run the rest of this process as uid 0 of a fresh user + mount namespace.

An ordinary user cannot mount overlayfs or run runc as root, but inside a user namespace they can
(Linux >= 5.11 for overlayfs, with `userxattr`). `enter()` forks: the child `unshare`s
CLONE_NEWUSER|CLONE_NEWNS and waits while the parent maps, with the distribution's setuid
helpers `newuidmap`/`newgidmap` (package uidmap), namespace uid 0 to the user and 1..N to the
user's subordinate range from /etc/subuid (/etc/subgid for groups); then the child makes every
mount private and carries on with the build as uid 0, while the parent only waits, forwards
SIGTERM/SIGHUP, and exits with the child's status. Everything the build mounts vanishes with the
child's mount namespace. No setuid helper of ours is involved (this is how buildah/podman do it).

Files the build writes under the user's cache are owned, on disk, by the user (namespace uid 0)
or by subordinate ids (namespace uid >= 1); seen from inside, and so in every exported tar, they
carry the in-namespace ids.
"""

from __future__ import annotations

import ctypes
import functools
import os
import pwd
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from backend.errors import BackendError

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
_MS_REC, _MS_PRIVATE = 0x4000, 1 << 18
ENV_MARK = "_IRCTL_USERNS"  # set in the child: the namespace is entered (for nested invocations)


class UserNamespaceError(BackendError):
    """The user namespace cannot be entered (no subordinate ids, no newuidmap, kernel refuses)."""


@dataclass(frozen=True)
class IdRange:
    start: int
    count: int


def _owner_keys(user: str | None, uid: int) -> set[str]:
    return {k for k in (user, str(uid)) if k}


def subordinate_ranges(path: str | os.PathLike, user: str | None, uid: int) -> list[IdRange]:
    """Ranges `name:start:count` (or `uid:start:count`) of this user in /etc/subuid or /etc/subgid."""
    keys = _owner_keys(user, uid)
    out = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[0] not in keys:
            continue
        try:
            start, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if count > 0:
            out.append(IdRange(start, count))
    return out


def _map_args(own: int, ranges: list[IdRange]) -> list[str]:
    """newuidmap triples: inside 0 -> our own id, then inside 1.. -> the subordinate ranges in order."""
    args = ["0", str(own), "1"]
    inside = 1
    for r in ranges:
        args += [str(inside), str(r.start), str(r.count)]
        inside += r.count
    return args


def read_id_map(kind: str = "uid", pid: str = "self") -> list[tuple[int, int, int]]:
    """(inside, outside, count) rows of /proc/PID/uid_map or gid_map."""
    rows = []
    with open(f"/proc/{pid}/{kind}_map") as f:
        for line in f:
            a, b, c = (int(x) for x in line.split())
            rows.append((a, b, c))
    return rows


@functools.cache
def in_user_namespace() -> bool:
    """True when this process is not in the initial user namespace (its uid map is not the identity)."""
    try:
        return read_id_map("uid") != [(0, 0, 4294967295)]
    except OSError:
        return False


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)  # libc is already loaded; find_library would run ldconfig


def problems(user: str | None = None, uid: int | None = None, gid: int | None = None) -> list[str]:
    """What is missing for `enter()` on this host for this user (empty: nothing)."""
    uid = os.getuid() if uid is None else uid
    gid = os.getgid() if gid is None else gid
    user = user or _user_name(uid)
    out = []
    for tool in ("newuidmap", "newgidmap"):
        if shutil.which(tool) is None:
            out.append(f"{tool} not found (install the uidmap package)")
    if not subordinate_ranges("/etc/subuid", user, uid):
        out.append(f"no subordinate uids for {user} in /etc/subuid "
                   f"(as root: usermod --add-subuids 100000-165535 {user})")
    if not subordinate_ranges("/etc/subgid", user, uid):
        out.append(f"no subordinate gids for {user} in /etc/subgid "
                   f"(as root: usermod --add-subgids 100000-165535 {user})")
    return out


def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return os.environ.get("USER")


def enter() -> None:
    """Become uid 0 of a new user and mount namespace (see the module docstring); returns in the child.

    The parent never returns: it exits with the child's exit status. Call it early, before any thread
    exists (unshare(CLONE_NEWUSER) refuses multi-threaded processes; the fork gives a fresh one anyway)."""
    uid, gid = os.getuid(), os.getgid()
    user = _user_name(uid)
    missing = problems(user, uid, gid)
    if missing:
        raise UserNamespaceError("rootless build impossible: " + "; ".join(missing))
    uids = subordinate_ranges("/etc/subuid", user, uid)
    gids = subordinate_ranges("/etc/subgid", user, uid)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(go_w)
        _child(ready_w, go_r)
        return
    os.close(ready_w)
    os.close(go_r)
    status = _parent(pid, ready_r, go_w, uid, gid, uids, gids)
    os._exit(status)


def _child(ready_w: int, go_r: int) -> None:
    try:
        if _libc().unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"unshare(CLONE_NEWUSER|CLONE_NEWNS): {os.strerror(e)}")
        os.write(ready_w, b"u")
    except OSError as e:
        os.write(ready_w, b"E" + str(e).encode())
        os._exit(125)
    finally:
        os.close(ready_w)
    answer = os.read(go_r, 4096)
    os.close(go_r)
    if answer != b"ok":
        os._exit(125)
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    with _suppress_oserror():
        os.setgroups([0])
    if _libc().mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        e = ctypes.get_errno()
        sys.stderr.write(f"error: making mounts private in the user namespace: {os.strerror(e)}\n")
        os._exit(125)
    os.environ[ENV_MARK] = "1"
    in_user_namespace.cache_clear()


class _suppress_oserror:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, value, tb) -> bool:
        return kind is not None and issubclass(kind, OSError)


def _parent(pid: int, ready_r: int, go_w: int, uid: int, gid: int, uids: list[IdRange],
            gids: list[IdRange]) -> int:
    msg = os.read(ready_r, 4096)
    os.close(ready_r)
    error = None
    if msg != b"u":
        error = msg[1:].decode(errors="replace") or "the child died before entering the namespace"
    else:
        for tool, own, ranges in (("newuidmap", uid, uids), ("newgidmap", gid, gids)):
            res = subprocess.run([tool, str(pid), *_map_args(own, ranges)], capture_output=True, text=True)
            if res.returncode != 0:
                error = f"{tool} failed: {(res.stderr or res.stdout).strip()}"
                break
    os.write(go_w, b"ok" if error is None else b"no")
    os.close(go_w)

    def forward(signum, _frame) -> None:
        with _suppress_oserror():
            os.kill(pid, signum)

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C reaches the child directly
    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(s, forward)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if error is not None:
        sys.stderr.write(f"error: cannot enter a user namespace: {error}\n")
        return 125
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code
