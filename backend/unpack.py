"""ADD of a local archive: detect a tar (plain, gzip, bzip2, xz, zstd) and extract it safely.

Detection is BuildKit's: the file decompresses and its first tar header reads; anything else is
copied as a file.  Extraction follows Docker's ``archive.Untar`` (owners, modes, mtimes, xattrs
and devices from the archive; an existing path is replaced unless both are directories) with the
guards a daemonless builder needs instead of a chroot:

* a name is cleaned and made relative (``/etc/x`` → ``dest/etc/x``); one that climbs out
  (``../x``, ``a/../../x``) is refused;
* every parent directory of an entry must be a real directory inside ``dest``: an entry that would
  be written *through* a symlink (a symlink-then-write trick) is refused;
* a hard link may only point at a non-directory inside ``dest``, reached without symlinks;
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

from backend.copy import FileOpError


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
    """A member name made relative and cleaned; refuses one that climbs out of the destination."""
    cleaned = posixpath.normpath(name).lstrip("/")
    cleaned = posixpath.normpath(cleaned) if cleaned else "."
    if cleaned == ".." or cleaned.startswith("../"):
        raise FileOpError(f"refusing to extract {display}: {what} {name!r} is outside the destination", display)
    return "" if cleaned == "." else cleaned


def _parent_dirs(dest: str, rel: str, display: str, name: str) -> str:
    """Make sure every parent of ``rel`` is a real directory inside ``dest``; returns the host path."""
    current = dest
    parts = rel.split("/")
    for part in parts[:-1]:
        current = os.path.join(current, part)
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            os.mkdir(current, 0o755)
            os.chmod(current, 0o755)
            continue
        if stat.S_ISLNK(st.st_mode):
            raise FileOpError(f"refusing to extract {display}: {name!r} would be written through the "
                              f"symlink {posixpath.dirname(rel)!r}", display)
        if not stat.S_ISDIR(st.st_mode):
            raise FileOpError(f"refusing to extract {display}: a parent of {name!r} is not a directory", display)
    return os.path.join(current, parts[-1])


def extract_archive(path: str, dest: str, *, limits: UnpackLimits = DEFAULT_LIMITS, display: str = "") -> None:
    """Extract the archive at ``path`` into the existing directory ``dest`` (a host path)."""
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
                target = _parent_dirs(dest, rel, display, m.name)
                _extract_member(tf, m, dest, target, display, dirs)
    except (tarfile.TarError, EOFError, zstandard.ZstdError, lzma.LZMAError) as e:
        raise FileOpError(f"failed to extract {display}: {e}", display) from None
    for target, m in reversed(dirs):
        os.utime(target, (m.mtime, m.mtime), follow_symlinks=False)


def _extract_member(tf: tarfile.TarFile, m: tarfile.TarInfo, dest: str, target: str, display: str,
                    dirs: list) -> None:
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        st = None
    if st is not None and not (stat.S_ISDIR(st.st_mode) and m.isdir()):
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(target)
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
        if not link_rel:
            raise FileOpError(f"refusing to extract {display}: hard link {m.name!r} to a directory", display)
        source = os.path.join(dest, link_rel)
        walk = dest
        for part in link_rel.split("/"):
            walk = os.path.join(walk, part)
            try:
                lst = os.lstat(walk)
            except FileNotFoundError:
                raise FileOpError(f"refusing to extract {display}: hard link {m.name!r} to missing "
                                  f"{m.linkname!r}", display) from None
            if stat.S_ISLNK(lst.st_mode) and walk != source:
                raise FileOpError(f"refusing to extract {display}: hard link {m.name!r} through a symlink", display)
        if stat.S_ISDIR(os.lstat(source).st_mode):
            raise FileOpError(f"refusing to extract {display}: hard link {m.name!r} to a directory", display)
        os.link(source, target, follow_symlinks=False)
        return
    elif m.ischr() or m.isblk() or m.isfifo():
        kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else stat.S_IFIFO
        os.mknod(target, kind | (m.mode & 0o7777), os.makedev(m.devmajor, m.devminor))
    else:
        return  # sparse/contiguous oddities and unknown types are skipped
    os.lchown(target, m.uid, m.gid)
    if not m.issym():
        os.chmod(target, m.mode & 0o7777)
    for key, value in m.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            with contextlib.suppress(OSError):
                os.setxattr(target, key[len("SCHILY.xattr."):], value.encode("utf-8", "surrogateescape"),
                            follow_symlinks=False)
    if m.isdir():
        dirs.append((target, m))
    else:
        os.utime(target, (m.mtime, m.mtime), follow_symlinks=False)
