"""ADD of a local archive: detect a tar (plain, gzip, bzip2, xz, zstd) and extract it safely.

Detection is BuildKit's ``isArchivePath``: the file decompresses and its first tar header reads;
anything else is copied as a file.  Extraction follows BuildKit's ``applyRootArchive`` (owners,
modes, mtimes, xattrs from the archive, ``--chown`` overriding the owners; an existing path is
replaced unless both are directories; directory times set last), with every path confined to
``dest`` as ``os.Root`` confines it:

* a name is cleaned and made relative (``/etc/x`` → ``dest/etc/x``); one that climbs out
  (``../x``, ``a/../../x``) is refused;
* symlinks met on the way (from the archive or already in ``dest``) are resolved *inside* ``dest``:
  an absolute target restarts at ``dest``, a relative one that climbs out of it is refused, so a
  symlink-then-write trick can never reach outside;
* a hard link must name a non-directory inside ``dest``, resolved the same way;
* the number of entries and the total size are limited (``UnpackLimits``), which stops bombs.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
from dataclasses import dataclass

import zstandard

from backend.fileops.copy import FileOpError
from backend.fs import devnodes, safefs

MAX_LINKS = 255


@dataclass(frozen=True)
class UnpackLimits:
    max_entries: int = 1_000_000
    max_bytes: int = 32 << 30  # total size of the regular files extracted


DEFAULT_LIMITS = UnpackLimits()

_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)


def _open_stream(f):
    head = f.read(8)
    f.seek(0)
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            if kind == "gzip":
                return gzip.GzipFile(fileobj=f, mode="rb")
            if kind == "bzip2":
                return bz2.BZ2File(f, "rb")
            if kind == "xz":
                return lzma.LZMAFile(f, "rb")
            return zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)
    return f


def _open_file(path: str):
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise FileOpError(f"not a regular file: {path}")
    return f


def is_archive(path: str) -> bool:
    """Does ``path`` hold a tar archive (optionally compressed) with at least one entry?"""
    try:
        with _open_file(path) as f, _open_stream(f) as stream:
            with tarfile.open(fileobj=stream, mode="r|") as tf:
                return tf.next() is not None
    except (tarfile.TarError, OSError, EOFError, zstandard.ZstdError, lzma.LZMAError, FileOpError):
        return False


def _clean(name: str, display: str, what: str) -> str:
    """A member name made relative and cleaned ('' is dest itself); refuses one that climbs out."""
    cleaned = posixpath.normpath(name.lstrip("/")) if name.strip("/") else "."
    if cleaned == ".." or cleaned.startswith("../"):
        raise FileOpError(f"refusing to extract {display}: {what} {name!r} is outside the destination", display)
    return "" if cleaned == "." else cleaned


def _resolve(dest: str, name: str, follow_leaf: bool, display: str) -> str:
    """``name`` (clean, relative) with every symlink on the way resolved inside ``dest``."""
    for _ in range(MAX_LINKS):
        parts = [p for p in name.split("/") if p and p != "."]
        resolved: list[str] = []
        followed = False
        for i, part in enumerate(parts):
            if i == len(parts) - 1 and not follow_leaf:
                resolved.append(part)
                break
            candidate = "/".join([*resolved, part])
            try:
                st = os.lstat(os.path.join(dest, candidate))
            except (FileNotFoundError, NotADirectoryError):
                return "/".join([*resolved, *parts[i:]])
            if not stat.S_ISLNK(st.st_mode):
                resolved.append(part)
                continue
            target = os.readlink(os.path.join(dest, candidate))
            if target.startswith("/"):
                name = _clean(target, display, "symlink target")
            else:
                name = posixpath.normpath(posixpath.join(posixpath.dirname(candidate), target))
                if name == ".":
                    name = ""
                elif name == ".." or name.startswith("../"):
                    raise FileOpError(f"refusing to extract {display}: symlink {candidate!r} points outside "
                                      "the destination", display)
            rest = "/".join(parts[i + 1:])
            name = posixpath.join(name, rest) if name and rest else (name or rest)
            followed = True
            break
        if not followed:
            return "/".join(resolved)
    raise FileOpError(f"refusing to extract {display}: too many symlinks resolving {name!r}", display)


def _make_parents(dest: str, rel: str, display: str) -> str:
    """Create the missing parents of ``rel`` (resolved: no symlinks) 0755 0:0; returns the host path."""
    current = dest
    parts = rel.split("/")
    for part in parts[:-1]:
        current = os.path.join(current, part)
        try:
            os.mkdir(current, 0o755)
        except FileExistsError:
            st = os.lstat(current)
            if not stat.S_ISDIR(st.st_mode):
                raise FileOpError(f"refusing to extract {display}: {posixpath.dirname(rel)!r} is not a directory",
                                  display) from None
            continue
        os.lchown(current, 0, 0)
        os.chmod(current, 0o755)
    return os.path.join(current, parts[-1])


def extract_archive(path: str, dest: str, *, limits: UnpackLimits = DEFAULT_LIMITS, display: str = "",
                    owner: tuple[int, int] | None = None) -> None:
    """Extract the archive at ``path`` into the existing directory ``dest`` (a host path).
    ``owner`` (uid, gid), when given, replaces the owners recorded in the archive (ADD --chown)."""
    display = display or os.path.basename(path)
    dirs: list[tuple[str, tarfile.TarInfo]] = []
    entries = total = 0
    try:
        with _open_file(path) as f, _open_stream(f) as stream, tarfile.open(fileobj=stream, mode="r|") as tf:
            for m in tf:
                entries += 1
                if entries > limits.max_entries:
                    raise FileOpError(f"refusing to extract {display}: more than {limits.max_entries} entries", display)
                if m.isreg():
                    total += m.size
                    if total > limits.max_bytes:
                        raise FileOpError(f"refusing to extract {display}: more than {limits.max_bytes} bytes", display)
                rel = _clean(m.name, display, "entry")
                if not rel:
                    continue  # the destination itself ("./")
                rel = _resolve(dest, rel, m.isdir(), display)
                if not rel:
                    continue
                target = _make_parents(dest, rel, display)
                _extract_member(tf, m, dest, target, display, dirs, owner)
    except (tarfile.TarError, EOFError, zstandard.ZstdError, lzma.LZMAError) as e:
        raise FileOpError(f"failed to extract {display}: {e}", display) from None
    for target, m in reversed(dirs):
        os.utime(target, (m.mtime, m.mtime), follow_symlinks=False)


def _extract_member(tf: tarfile.TarFile, m: tarfile.TarInfo, dest: str, target: str, display: str,
                    dirs: list, owner: tuple[int, int] | None) -> None:
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        st = None
    if st is not None and not (stat.S_ISDIR(st.st_mode) and m.isdir()):
        if stat.S_ISDIR(st.st_mode):
            safefs.rmtree(target)
        else:
            os.unlink(target)
    if m.isreg():
        src = tf.extractfile(m)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    elif m.isdir():
        if st is None:
            os.mkdir(target, 0o700)
    elif m.issym():
        os.symlink(m.linkname, target)
    elif m.islnk():
        link_rel = _clean(m.linkname, display, "hard link target")
        link_rel = _resolve(dest, link_rel, False, display) if link_rel else ""
        source = os.path.join(dest, link_rel) if link_rel else dest
        try:
            lst = os.lstat(source)
        except (FileNotFoundError, NotADirectoryError):
            raise FileOpError(f"refusing to extract {display}: hard link {m.name!r} to missing {m.linkname!r}",
                              display) from None
        if stat.S_ISDIR(lst.st_mode):
            raise FileOpError(f"refusing to extract {display}: hard link {m.name!r} to a directory", display)
        os.link(source, target, follow_symlinks=False)
        if stat.S_ISLNK(lst.st_mode):
            return
    elif m.isfifo():
        os.mkfifo(target, 0o600)
    elif m.ischr() or m.isblk():  # never a node in the store: its placeholder (backend.fs.devnodes)
        if not 0 <= m.devmajor < 1 << 12 or not 0 <= m.devminor < 1 << 20:
            raise FileOpError(f"refusing to extract {display}: {m.name!r} has device number "
                              f"{m.devmajor}:{m.devminor}", display)
        kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
        devnodes.make_placeholder_at(target, kind | (m.mode & 0o7777), os.makedev(m.devmajor, m.devminor))
    else:
        return  # unknown entry types are skipped
    os.lchown(target, *(owner or (m.uid, m.gid)))
    if not m.issym():
        os.chmod(target, m.mode & (0o1777 if m.ischr() or m.isblk() else 0o7777))
    for key, value in m.pax_headers.items():
        if key.startswith("SCHILY.xattr.") and not key[len("SCHILY.xattr."):].startswith(devnodes.XATTR_NAMES):
            with contextlib.suppress(OSError):
                os.setxattr(target, key[len("SCHILY.xattr."):], value.encode("utf-8", "surrogateescape"),
                            follow_symlinks=False)
    if m.isdir():
        dirs.append((target, m))
    else:
        os.utime(target, (m.mtime, m.mtime), follow_symlinks=False)
