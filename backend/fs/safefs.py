"""Safe primitives for trees a build step wrote: never follow a link the step planted, never recurse.

After a RUN step, its upper dir (and any cache mount or output mount it wrote) is hostile: any
directory on a path irctl computed may have been replaced by a symlink to the host (`ln -s /etc
/a`), and the tree may nest deeper than Python's recursion limit or PATH_MAX. Every operation irctl
makes on such a tree goes through here:

* `open_beneath` opens a path below a directory fd with `openat2(2)` (`RESOLVE_BENEATH |
  RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`): a symlink anywhere on the path is ELOOP, never
  followed. Where openat2 is missing (Linux < 5.6, or a seccomp filter) it walks the components
  with `O_NOFOLLOW`, which gives the same answer.
* `walk` visits a tree depth-first with a stack of directory fds (no recursion; names are opened
  relative to their parent's fd, so no path is ever longer than one name), refusing trees deeper
  than `MAX_DEPTH` with a `TreeError` that names the path.
* `rmtree` removes a tree of any depth with two fds open: each subdirectory is renamed up to the
  top of the tree before it is emptied, so there is nothing to recurse into and no link to follow.

The trees are not changing while irctl works on them (the step's processes are gone), so these
guard against what a step left behind, not against a race with it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import stat
from collections.abc import Iterator
from pathlib import Path

from backend.errors import BackendError

MAX_DEPTH = 4096
_SHORT_PATH = 3072  # directories below a root; BuildKit's and Docker's walkers fail around PATH_MAX too

_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437}.get(os.uname().machine, 437)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class TreeError(BackendError, OSError):
    """A tree irctl was walking is deeper than it handles, or goes through a link on a computed path.

    Also an ``OSError`` on purpose: it is raised where the kernel raises ``ELOOP``/``EXDEV`` for the
    same refusal (``open_beneath``), and the walks and copies turn every ``OSError`` into their own
    located message (``except OSError``), so this one is reported the same way."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_openat2_works: bool | None = None


def openat2(dir_fd: int, path: str | bytes, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2); raises OSError (ENOSYS where the kernel or a filter lacks it)."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    fd = _libc.syscall(_SYS_OPENAT2, ctypes.c_int(dir_fd), ctypes.c_char_p(os.fsencode(path)),
                       ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), os.fsdecode(path))
    return fd


def _split(rel: str | bytes) -> list[bytes]:
    parts = [p for p in os.fsencode(rel).split(b"/") if p not in (b"", b".")]
    if b".." in parts:
        raise TreeError(errno.EXDEV, "path climbs out of its root", os.fsdecode(rel))
    return parts


def open_beneath(root_fd: int, rel: str | bytes, flags: int = _DIR_FLAGS) -> int:
    """Open `rel` below the directory `root_fd` without following any symlink on the way (the last
    component included: ELOOP, or ENOTDIR when a directory was asked for and a file is there)."""
    global _openat2_works
    parts = _split(rel)
    if not parts:
        return os.open(".", flags | os.O_CLOEXEC, dir_fd=root_fd)
    if _openat2_works is not False:
        try:
            fd = openat2(root_fd, b"/".join(parts), flags | os.O_NOFOLLOW,
                         RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
            _openat2_works = True
            return fd
        except OSError as e:
            if e.errno in (errno.ENOSYS, errno.EPERM, errno.E2BIG) and _openat2_works is None:
                _openat2_works = False
            elif e.errno != errno.ENAMETOOLONG:
                raise
    fd = os.dup(root_fd)
    try:
        for i, part in enumerate(parts):
            nfd = os.open(part, (flags if i == len(parts) - 1 else _DIR_FLAGS) | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=fd)
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_parent(root_fd: int, rel: str | bytes) -> tuple[int, bytes] | None:
    """(fd of the directory holding `rel`, last name), or None when a component on the way is missing,
    a symlink or not a directory: whatever the step put there, irctl does not go through it."""
    parts = _split(rel)
    if not parts:
        return None
    try:
        return open_beneath(root_fd, b"/".join(parts[:-1])), parts[-1]
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            return None
        raise


def lstat_at(dir_fd: int, name: bytes | str) -> os.stat_result | None:
    try:
        return os.lstat(name, dir_fd=dir_fd)
    except (FileNotFoundError, NotADirectoryError):
        return None


def fd_path(dir_fd: int, name: bytes | str) -> bytes:
    """A short path naming `name` in `dir_fd` for calls without a dir_fd form (xattrs): the magic
    link is the directory itself, `name` is then looked up in it (not followed when it is a link,
    given follow_symlinks=False). For the directory itself pass its fd to the call instead: with
    follow_symlinks=False, `/proc/self/fd/N` alone would name the magic link, not the directory."""
    return b"/proc/self/fd/%d/%s" % (dir_fd, os.fsencode(name))


# ---------------------------------------------------------------------------------------------- walking

def raise_nofile(need: int) -> None:
    """Raise the soft RLIMIT_NOFILE towards `need` (walks hold one fd per level)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass


class Entry:
    """One entry met by `walk`: `rel` its path from the root (bytes), `dir_fd` its parent's fd (valid
    until the walk moves on), `st` its lstat, `root` the walk's root path when it was given one."""

    __slots__ = ("rel", "name", "dir_fd", "st", "depth", "root")

    def __init__(self, rel: bytes, name: bytes, dir_fd: int, st: os.stat_result, depth: int,
                 root: bytes | None = None) -> None:
        self.rel, self.name, self.dir_fd, self.st, self.depth, self.root = rel, name, dir_fd, st, depth, root

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)

    def open(self, flags: int = os.O_RDONLY) -> int:
        return os.open(self.name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.dir_fd)

    def readlink(self) -> bytes:
        return os.readlink(self.name, dir_fd=self.dir_fd)

    @property
    def xpath(self) -> bytes:
        """Path for xattr calls (with follow_symlinks=False): the full path while it is short (every
        directory on it was just met by the walk as a directory, and the tree is at rest), else one
        relative to the parent's fd through /proc (any depth)."""
        if self.root is not None and len(self.root) + len(self.rel) < _SHORT_PATH:
            return self.root + b"/" + self.rel
        return fd_path(self.dir_fd, self.name)


def short_path(path: bytes | str | os.PathLike) -> str:
    """A path cut to at most ~80 characters for one error line (a deep tree's paths run to 20 KB)."""
    shown = os.fsdecode(os.fspath(path))
    return shown if len(shown) <= 80 else shown[:40] + "…" + shown[-30:]


def os_error_text(e: OSError) -> str:
    """`strerror: path` with the path cut (`short_path`), for an OSError met while building."""
    text = e.strerror or str(e)
    if e.filename is not None:
        text += f": {short_path(e.filename)}"
    return text


def too_deep(rel: bytes | str, where: str = "") -> TreeError:
    shown = short_path(rel)
    return TreeError(errno.ELOOP, f"directory tree{(' ' + where) if where else ''} nests deeper than "
                     f"{MAX_DEPTH} levels at {shown!r}")


def walk(root: str | bytes | os.PathLike | int, *, sort: bool = True, descend=None,
         where: str = "") -> Iterator[Entry]:
    """Every entry below `root` (a path or a dir fd), depth-first, parents before children, names
    sorted bytewise within a directory. Symlinks are reported, never followed. `descend(entry)`
    may return False to skip a directory's contents. A directory deeper than `MAX_DEPTH` raises
    `TreeError` naming it."""
    if isinstance(root, int):
        top, root_path = os.dup(root), None
    else:
        root_path = os.fsencode(os.fspath(root))
        top = os.open(root_path, _DIR_FLAGS)
    raise_nofile(MAX_DEPTH + 512)
    stack: list[tuple[int, bytes, Iterator[bytes], int]] = []
    try:
        stack.append((top, b"", iter(_names(top, sort)), 0))
        while stack:
            fd, prefix, names, depth = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                os.close(fd)
                continue
            try:
                st = os.lstat(name, dir_fd=fd)
            except FileNotFoundError:
                continue
            rel = prefix + name
            entry = Entry(rel, name, fd, st, depth + 1, root_path)
            yield entry
            if stat.S_ISDIR(st.st_mode) and (descend is None or descend(entry)):
                if depth + 1 >= MAX_DEPTH:
                    raise too_deep(rel, where)
                try:
                    cfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                except OSError as e:
                    if e.errno == errno.ELOOP:
                        continue  # replaced by a link after the lstat: not ours to follow
                    raise
                try:
                    child_names = _names(cfd, sort)
                except BaseException:
                    os.close(cfd)
                    raise
                stack.append((cfd, rel + b"/", iter(child_names), depth + 1))
    finally:
        for fd, *_ in stack:
            os.close(fd)


def _names(fd: int, sort: bool) -> list[bytes]:
    names = [n.encode("utf-8", "surrogateescape") for n in os.listdir(fd)]  # os.fsencode, without the calls
    return sorted(names) if sort else names


# ---------------------------------------------------------------------------------------------- removing

def rmtree(path: str | bytes | os.PathLike, ignore_errors: bool = False) -> None:
    """Remove `path` (a tree of any depth, or a file, or nothing) without following any link in it.

    Each subdirectory is renamed to the top of the tree (a unique name there) before it is emptied,
    so the walk never holds more than two fds and never recurses. Mount points are not crossed (a
    rename fails with EBUSY/EXDEV there and the error is raised, or ignored)."""
    path = os.fsencode(os.fspath(path))
    head, base = os.path.split(path.rstrip(b"/") or path)
    try:
        pfd = os.open(head or b".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError:
        if ignore_errors:
            return
        raise
    try:
        _rmtree_at(pfd, base, ignore_errors)
    finally:
        os.close(pfd)


def rmtree_at(dir_fd: int, name: bytes | str, *, ignore_errors: bool = False) -> None:
    """`rmtree` of `name` in the directory `dir_fd`."""
    _rmtree_at(dir_fd, os.fsencode(name), ignore_errors)


def _rmtree_at(pfd: int, base: bytes, ignore_errors: bool) -> None:
    try:
        st = os.lstat(base, dir_fd=pfd)
    except FileNotFoundError:
        return
    try:
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(base, dir_fd=pfd)
            return
        top = os.open(base, _DIR_FLAGS, dir_fd=pfd)
    except FileNotFoundError:
        return
    except OSError:
        if ignore_errors:
            return
        raise
    counter = 0
    pending: list[bytes | None] = [None]  # None: the top itself; else a name in the top
    first_error: OSError | None = None
    try:
        while pending:
            name = pending.pop()
            try:
                fd = top if name is None else os.open(name, _DIR_FLAGS, dir_fd=top)
            except OSError as e:
                if not isinstance(e, FileNotFoundError):
                    first_error = first_error or e
                continue
            try:
                for child in [os.fsencode(n) for n in os.listdir(fd)]:
                    try:
                        cst = os.lstat(child, dir_fd=fd)
                        if not stat.S_ISDIR(cst.st_mode):
                            os.unlink(child, dir_fd=fd)
                        elif name is None:
                            pending.append(child)
                        else:
                            while True:
                                counter += 1
                                hoisted = b".irctl-rm.%d" % counter
                                if lstat_at(top, hoisted) is None:
                                    break
                            os.rename(child, hoisted, src_dir_fd=fd, dst_dir_fd=top)
                            pending.append(hoisted)
                    except FileNotFoundError:
                        continue
                    except OSError as e:
                        first_error = first_error or e
            finally:
                if fd != top:
                    os.close(fd)
            if name is not None:
                try:
                    os.rmdir(name, dir_fd=top)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    first_error = first_error or e
    finally:
        os.close(top)
    try:
        os.rmdir(base, dir_fd=pfd)
    except FileNotFoundError:
        pass
    except OSError as e:
        first_error = first_error or e
    if first_error is not None and not ignore_errors:
        raise first_error


# ---------------------------------------------------------------------------------------------- private dirs

PRIVATE_MODE = 0o700


def private_dir(path: str | os.PathLike) -> Path:
    """Create `path` mode 0700 (missing parents too: irctl made them, so they are irctl's), and make
    an existing one of ours 0700 (a store an older irctl created 0755): a store or runtime dir another
    local user can enter hands them device nodes, setuid files, secrets and other users' builds."""
    p = Path(path)
    missing = []
    while not os.path.lexists(p):
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, PRIVATE_MODE)
        except FileExistsError:
            pass
    p = Path(path)
    st = os.stat(p)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", os.fspath(p))
    if stat.S_IMODE(st.st_mode) & 0o077 and st.st_uid == os.geteuid():
        os.chmod(p, stat.S_IMODE(st.st_mode) & 0o700 | 0o700)
    return p
