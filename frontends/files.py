"""Reading a build file or an ignore file from a build context: bounded, and never out of it.

A context is untrusted (a cloned repository, a pull request), so its ``Dockerfile``,
``Containerfile``, ``irctl.toml`` or ``.dockerignore`` may be a symbolic link to a host file
(``/etc/shadow``, ``/root/.ssh/id_rsa``) — read, it would be parsed and a line of it quoted in an
error — or a huge sparse file, a FIFO that blocks, a device.  ``read_context_file``:

* resolves the path; when it is inside the context it must stay inside after every symlink (a
  link to another file of the context is fine; one that leaves it is refused, naming the link,
  never the target), and the file is opened with ``O_NOFOLLOW`` on that resolution, non-blocking,
  and must be a regular file;
* a path *outside* the context was named by the user (``-f ~/Dockerfile.dev``, ``-f /dev/stdin``)
  and is read as named, symlinks followed;
* reads at most ``MAX_SIZE`` bytes (16 MiB, the gRPC message limit BuildKit reads a Dockerfile
  through; the largest generated Dockerfiles reported are ~1.3 MB): a larger file is refused
  before it is read.

Errors are ``FileError``: one line, the path as given, the reason.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from frontends.errors import FrontendError

MAX_SIZE = 16 << 20


class FileError(FrontendError):
    user_facing = True


def inside(path: str | os.PathLike, context: str | os.PathLike) -> bool:
    """Lexically inside ``context`` (before any symlink is followed)."""
    p, c = os.path.abspath(path), os.path.abspath(context)
    return p == c or p.startswith(c.rstrip("/") + "/")


def confined_path(path: str | os.PathLike, context: str | os.PathLike, what: str) -> str:
    """The real path of ``path`` (inside ``context``), or ``FileError`` if a link leaves it."""
    real, root = os.path.realpath(path), os.path.realpath(context)
    if real != root and not real.startswith(root.rstrip("/") + "/"):
        raise FileError(f"{path}: the {what} is a symbolic link to a path outside the build context; not read")
    return real


def read_context_file(path: str | os.PathLike, context: str | os.PathLike | None, what: str,
                      limit: int = MAX_SIZE) -> bytes:
    """The bytes of ``path``; ``context``: the build context it is confined to when inside it
    (None: a file the user named, read as named)."""
    confined = context is not None and inside(path, context)
    if confined:
        target = confined_path(path, context, what)  # type: ignore[arg-type]
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    else:
        target, flags = os.fspath(path), os.O_RDONLY | os.O_CLOEXEC
    try:
        fd = os.open(target, flags)
    except OSError as e:
        raise FileError(f"{path}: cannot read the {what}: {e.strerror}") from None
    with os.fdopen(fd, "rb", buffering=0) as f:
        st = os.fstat(fd)
        if confined and not stat.S_ISREG(st.st_mode):
            raise FileError(f"{path}: the {what} is not a regular file")
        if stat.S_ISDIR(st.st_mode):
            raise FileError(f"{path}: the {what} is a directory")
        if stat.S_ISREG(st.st_mode) and st.st_size > limit:
            raise FileError(f"{path}: the {what} is {_size(st.st_size)}, over the limit of {_size(limit)}")
        chunks, total = [], 0
        while total <= limit and (chunk := f.read(min(1 << 20, limit + 1 - total))):
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise FileError(f"{path}: the {what} is over the limit of {_size(limit)}")
    return b"".join(chunks)


def read_ignore_file(path: Path, context: Path) -> str:
    """An ignore file's text (UTF-8, checked): a file of another encoding is an error, not a crash."""
    data = read_context_file(path, context, "ignore file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FileError(f"{path}: the ignore file is not UTF-8 text (byte {e.start})") from None


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover
