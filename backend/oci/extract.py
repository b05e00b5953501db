"""Extracting a layer tar into the layer format (``.wh.x`` -> char 0:0, ``.wh..wh..opq`` -> opaque
xattr) without ever leaving ``dest_dir``: every parent is opened with O_NOFOLLOW relative to its
parent fd, so a symlink planted by the archive can't be written through.  Size and entry limits stop
bombs.  Reading uses stdlib ``tarfile`` in streaming mode behind these checks.

Asked to (``note_files``), it also notes each regular file's sha256 as its bytes go by, with the
stat it was left with: ``layer_tree_digest(dest, known=…)`` then names the tree without reading
every file back (a shared cache's layer is checked against its tree digest right after extraction).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import tarfile
from dataclasses import dataclass
from typing import BinaryIO

import zstandard
from zlib_ng import zlib_ng

from backend.errors import LayerError
from backend.fs import devnodes, safefs
from backend.fs.layerformat import opaque_xattr
from backend.oci.compression import BUF, Decompressed
from backend.oci.layertar import SKIP_XATTR_PREFIXES, WH_OPAQUE, WH_PREFIX
from backend.userns import in_user_namespace


@dataclass(frozen=True)
class ExtractLimits:
    max_bytes: int = 64 << 30  # total uncompressed tar bytes
    max_entries: int = 2_000_000


@dataclass(frozen=True)
class ExtractResult:
    diff_id: str  # sha256 of the uncompressed tar as read
    entries: int
    bytes: int
    skipped: tuple[str, ...] = ()  # device nodes left out (rootless: a user namespace cannot make them)
    files: dict[str, tuple[str, int, int, int]] | None = None  # with note_files: layer_tree_digest's `known`


# ---------------------------------------------------------------------------------------------
# writing


def _clean_name(raw: str, what: str = "entry") -> tuple[bytes, ...]:
    name = os.fsencode(raw)
    if name.startswith(b"/"):
        raise LayerError(f"refusing absolute {what} name {raw!r}")
    parts = tuple(p for p in name.split(b"/") if p not in (b"", b"."))
    if any(p == b".." for p in parts):
        raise LayerError(f"refusing {what} name {raw!r}: contains '..'")
    if len(parts) > safefs.MAX_DEPTH:
        raise LayerError(f"refusing {what} name {raw[:60]!r}…: nested deeper than {safefs.MAX_DEPTH} levels")
    return parts


class _Extractor:
    def __init__(self, dest: str | os.PathLike[str], note_files: bool = False):
        self.dest = os.fsencode(os.fspath(dest))
        os.makedirs(self.dest, exist_ok=True)
        self.root_fd = os.open(self.dest, os.O_RDONLY | os.O_DIRECTORY)
        self.is_root = os.geteuid() == 0
        self.userns = self.is_root and in_user_namespace()  # root in name only: no devices, no trusted.*
        self.skipped: list[str] = []
        self.dir_times: list[tuple[tuple[bytes, ...], int]] = []
        # fds of the dirs on the last path opened: a tar lists a tree depth-first, so the next entry's
        # parent is mostly on it (a 4096-deep tree costs 4096 opens, not 8 million)
        self.chain: list[tuple[bytes, int]] = []
        # path -> (sha256 hex, size, mtime_ns, ctime_ns) of the regular file this extraction left
        # there; every entry that makes a path sets or drops its note, so a note is never stale
        self.files: dict[str, tuple[str, int, int, int]] | None = {} if note_files else None

    def close(self) -> None:
        self.truncate(0)
        os.close(self.root_fd)

    def truncate(self, keep: int) -> None:
        """Forget the open dirs below the first `keep` (one of them is about to be replaced)."""
        while len(self.chain) > keep:
            os.close(self.chain.pop()[1])

    def open_dir(self, parts: tuple[bytes, ...], create: bool, display: str) -> int:
        """fd of dest/parts, refusing to pass through any symlink (or non-directory)."""
        same = 0
        for (name, _), p in zip(self.chain, parts):
            if name != p:
                break
            same += 1
        self.truncate(same)
        if len(self.chain) == len(parts):
            return os.dup(self.chain[-1][1] if self.chain else self.root_fd)
        safefs.raise_nofile(len(parts) + 256)
        fd = os.dup(self.chain[-1][1] if self.chain else self.root_fd)
        try:
            for i, p in enumerate(parts[same:], same):
                try:
                    nfd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise LayerError(f"{display}: parent {b'/'.join(parts[:i + 1]).decode(errors='replace')} "
                                         "does not exist") from None
                    os.mkdir(p, 0o755, dir_fd=fd)
                    nfd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        st = os.lstat(p, dir_fd=fd)
                        kind = "symlink" if stat.S_ISLNK(st.st_mode) else "non-directory"
                        raise LayerError(f"refusing {display!r}: path goes through {kind} "
                                         f"{b'/'.join(parts[:i + 1]).decode(errors='replace')!r}") from None
                    raise
                os.close(fd)
                fd = nfd
                self.chain.append((p, os.dup(fd)))
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _clear(self, pfd: int, base: bytes, keep_dir: bool) -> None:
        try:
            st = os.lstat(base, dir_fd=pfd)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return
            self._rmtree(pfd, base)
        else:
            os.unlink(base, dir_fd=pfd)

    def _rmtree(self, pfd: int, base: bytes) -> None:
        safefs.rmtree_at(pfd, base)

    def _meta(self, fd: int | None, pfd: int, base: bytes, ti: tarfile.TarInfo, symlink: bool = False) -> None:
        """Owner, mode, xattrs and mtime; via fd for files/dirs, via (pfd, base) nofollow for the rest."""
        if self.is_root:
            try:
                if fd is not None:
                    os.fchown(fd, ti.uid, ti.gid)
                else:
                    os.chown(base, ti.uid, ti.gid, dir_fd=pfd, follow_symlinks=False)
            except OSError as e:
                if e.errno != errno.EINVAL or not self.userns:
                    raise
                raise LayerError(f"{ti.name}: owner {ti.uid}:{ti.gid} is not mapped in this user namespace "
                                 "(give the user a larger range in /etc/subuid and /etc/subgid)") from None
        if not symlink:
            if fd is not None:
                os.fchmod(fd, ti.mode & 0o7777)
            else:
                os.chmod(base, ti.mode & 0o7777, dir_fd=pfd)
        for key, value in ti.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            xname = key[len("SCHILY.xattr."):]
            if xname.startswith(SKIP_XATTR_PREFIXES):
                continue
            raw = value.encode("utf-8", "surrogateescape")
            try:
                if fd is not None:
                    os.setxattr(fd, xname, raw)
                else:
                    os.setxattr(b"/proc/self/fd/%d/%s" % (pfd, base), xname, raw, follow_symlinks=False)
            except OSError as e:
                if (e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP)
                        or self.is_root and not self.userns and not symlink):
                    raise LayerError(f"{ti.name}: cannot set xattr {xname}: {e.strerror}") from None
        ns = int(ti.mtime * 1_000_000_000)
        if fd is not None:
            os.utime(fd, ns=(ns, ns))
        else:
            os.utime(base, ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)

    def add(self, tf: tarfile.TarFile, ti: tarfile.TarInfo) -> None:
        parts = _clean_name(ti.name)
        if not parts:
            return  # the root itself ("./"): keep dest as is
        *parent, base = parts
        if self.files is not None:
            self.files.pop(os.fsdecode(b"/".join(parts)), None)
        pfd = self.open_dir(tuple(parent), True, ti.name)
        self.truncate(len(parent))  # this entry may replace `base`: no open dir below the parent
        try:
            if base == WH_OPAQUE:
                os.setxattr(pfd, opaque_xattr(), b"y")
                return
            if base.startswith(WH_PREFIX):
                target = base[len(WH_PREFIX):]
                if target in (b"", b".", b".."):
                    raise LayerError(f"refusing whiteout entry {ti.name!r}")
                if self.files is not None:
                    self.files.pop(os.fsdecode(b"/".join((*parent, target))), None)
                self._clear(pfd, target, keep_dir=False)
                if not self.is_root:
                    raise LayerError(f"{ti.name}: creating a whiteout (char device 0:0) needs root")
                os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)
                self._meta(None, pfd, target, ti)
                return
            if ti.isdir():
                self._clear(pfd, base, keep_dir=True)
                try:
                    os.mkdir(base, 0o700, dir_fd=pfd)
                except FileExistsError:
                    pass
                fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=pfd)
                try:
                    self._meta(fd, pfd, base, ti)
                finally:
                    os.close(fd)
                self.dir_times.append((parts, int(ti.mtime * 1_000_000_000)))
            elif ti.isreg():
                self._clear(pfd, base, keep_dir=False)
                fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=pfd)
                try:
                    src = tf.extractfile(ti)
                    assert src is not None
                    h = hashlib.sha256() if self.files is not None else None
                    while True:
                        chunk = src.read(BUF)
                        if not chunk:
                            break
                        if h is not None:
                            h.update(chunk)
                        _write_all(fd, chunk)
                    self._meta(fd, pfd, base, ti)
                    if h is not None:
                        self._note(parts, h.hexdigest(), os.fstat(fd))
                finally:
                    os.close(fd)
            elif ti.issym():
                self._clear(pfd, base, keep_dir=False)
                os.symlink(ti.linkname, base, dir_fd=pfd)
                self._meta(None, pfd, base, ti, symlink=True)
            elif ti.islnk():
                lparts = _clean_name(ti.linkname, "hard link target")
                if not lparts:
                    raise LayerError(f"hard link {ti.name!r} has an empty target")
                *lparent, lbase = lparts
                sfd = self.open_dir(tuple(lparent), False, ti.name)
                self.truncate(0)  # the link may replace a dir on that path
                try:
                    try:
                        st = os.lstat(lbase, dir_fd=sfd)
                    except FileNotFoundError:
                        raise LayerError(f"hard link {ti.name!r} points to {ti.linkname!r}, "
                                         "which is not in the layer") from None
                    if stat.S_ISDIR(st.st_mode):
                        raise LayerError(f"hard link {ti.name!r} points to directory {ti.linkname!r}")
                    if (sfd, lbase) != (pfd, base):
                        self._clear(pfd, base, keep_dir=False)
                        os.link(lbase, base, src_dir_fd=sfd, dst_dir_fd=pfd, follow_symlinks=False)
                        self._note_link(lparts, parts, os.lstat(base, dir_fd=pfd))
                finally:
                    os.close(sfd)
            elif ti.ischr() or ti.isblk() or ti.isfifo():
                self._clear(pfd, base, keep_dir=False)
                if ti.isfifo():
                    os.mkfifo(base, 0o600, dir_fd=pfd)
                else:  # never a node in the store: its placeholder (backend.fs.devnodes)
                    kind = stat.S_IFCHR if ti.ischr() else stat.S_IFBLK
                    if not 0 <= ti.devmajor < 1 << 12 or not 0 <= ti.devminor < 1 << 20:
                        raise LayerError(f"{ti.name}: device number {ti.devmajor}:{ti.devminor} out of range")
                    fd = devnodes.make_placeholder(pfd, base, kind | (ti.mode & 0o7777),
                                                   os.makedev(ti.devmajor, ti.devminor))
                    try:
                        self._meta(fd, pfd, base, ti)
                        os.fchmod(fd, ti.mode & 0o1777)
                    finally:
                        os.close(fd)
                    return
                self._meta(None, pfd, base, ti)
            else:
                raise LayerError(f"{ti.name}: unsupported tar entry type {ti.type!r}")
        finally:
            os.close(pfd)

    def _note(self, parts: tuple[bytes, ...], sha: str, st: os.stat_result) -> None:
        assert self.files is not None
        self.files[os.fsdecode(b"/".join(parts))] = (sha, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _note_link(self, target: tuple[bytes, ...], parts: tuple[bytes, ...], st: os.stat_result) -> None:
        """A hard link changed its file's ctime: both names keep the content's note with the new stat."""
        if self.files is None:
            return
        note = self.files.pop(os.fsdecode(b"/".join(target)), None)
        if note is not None and note[1:3] == (st.st_size, st.st_mtime_ns):
            self._note(target, note[0], st)
            self._note(parts, note[0], st)

    def finish(self) -> None:
        """Directory mtimes last (creating children changed them); skip dirs replaced later on."""
        for parts, ns in reversed(self.dir_times):
            try:
                fd = self.open_dir(parts, False, b"/".join(parts).decode(errors="replace"))
            except (LayerError, FileNotFoundError):
                continue
            try:
                os.utime(fd, ns=(ns, ns))
            finally:
                os.close(fd)



def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def extract_layer(blob_stream: BinaryIO, media_type: str, dest_dir: str | os.PathLike[str], *,
                  limits: ExtractLimits = ExtractLimits(), note_files: bool = False) -> ExtractResult:
    """Untar a (possibly compressed) layer into ``dest_dir`` in overlay upper-dir format."""
    src = Decompressed(blob_stream, media_type, limits.max_bytes)
    ex = _Extractor(dest_dir, note_files)
    count = 0
    try:
        try:
            tf = tarfile.open(fileobj=io.BufferedReader(src, BUF), mode="r|", errorlevel=2)
        except tarfile.ReadError as e:
            raise LayerError(f"not a tar archive ({media_type}): {e}") from None
        with tf:
            try:
                for ti in tf:
                    count += 1
                    if count > limits.max_entries:
                        raise LayerError(f"layer has more than {limits.max_entries} entries (archive bomb?)")
                    ex.add(tf, ti)
            except tarfile.TarError as e:
                raise LayerError(f"corrupt layer tar: {e}") from None
        src.drain()
        ex.finish()
    except (zlib_ng.error, zstandard.ZstdError, EOFError) as e:
        raise LayerError(f"corrupt {src.kind} stream: {e}") from None
    finally:
        ex.close()
    return ExtractResult(diff_id="sha256:" + src.hash.hexdigest(), entries=count, bytes=src.total,
                         skipped=tuple(ex.skipped), files=ex.files)
