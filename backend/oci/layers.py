"""Layer directories (overlayfs upper-dir format) to OCI layer tars and back.

Writing: a deterministic tar (depth-first, names sorted bytewise, directories before their contents,
numeric owners, PAX records for long names, big files and xattrs), optionally with every mtime clamped
to SOURCE_DATE_EPOCH, compressed with gzip/zstd while both digests (diff_id of the tar, digest of the
compressed stream) are computed in the same pass. The tar encoder is our own so that every byte is
under our control; reading uses stdlib ``tarfile`` in streaming mode behind our own safety checks.

Extracting: untar into the layer format (``.wh.x`` -> char 0:0, ``.wh..wh..opq`` -> opaque xattr)
without ever leaving ``dest_dir``: every parent is opened with O_NOFOLLOW relative to its parent fd,
so a symlink planted by the archive can't be written through. Size and entry limits stop bombs.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import tarfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterable

import zstandard
from zlib_ng import zlib_ng

from backend.errors import BackendError
from backend.fs import devnodes, safefs
from backend.fs.layerformat import OPAQUE_XATTR as _OVERLAY_OPAQUE_XATTR
from backend.fs.layerformat import is_opaque
from backend.userns import in_user_namespace

if TYPE_CHECKING:
    from backend.store.blobs import BlobStore

MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_LAYER_GZIP = MT_LAYER + "+gzip"
MT_LAYER_ZSTD = MT_LAYER + "+zstd"
MT_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MT_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
MEDIA_TYPES = {"gzip": MT_LAYER_GZIP, "zstd": MT_LAYER_ZSTD, "none": MT_LAYER}

OPAQUE_XATTR = _OVERLAY_OPAQUE_XATTR  # user.overlay.opaque in a rootless build's user namespace
WH_PREFIX = b".wh."
WH_OPAQUE = b".wh..wh..opq"
# xattrs that describe the overlay (or the host) rather than the file; never put in a layer tar, never
# taken from one (user.overlay.* would steer a rootless `userxattr` overlay mount)
_SKIP_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.", "security.selinux", "system.", *devnodes.XATTR_NAMES)
_BUF = 1 << 20
_SMALL = 256 << 10


class LayerError(BackendError):
    """A layer could not be written or an archive was refused."""


@dataclass(frozen=True)
class LayerBlob:
    """A compressed layer: ``digest``/``size`` of the blob, ``diff_id`` of the uncompressed tar."""

    digest: str
    diff_id: str
    size: int
    media_type: str


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


# ---------------------------------------------------------------------------------------------
# writing


class _Sink:
    """Buffers tar bytes, hashes them (diff_id), compresses them, hashes the output (digest)."""

    def __init__(self, out: BinaryIO, compression: str, level: int | None, threads: int):
        self.out = out
        self.buf = bytearray()
        self.diff = hashlib.sha256()
        self.dig = hashlib.sha256()
        self.size = 0
        self._abort: Callable[[], None] = _nothing
        if compression == "gzip":
            gz = _ParallelGzip(6 if level is None else level)
            self._compress: Callable[[bytes], bytes] = gz.compress
            self._finish: Callable[[], bytes] = gz.flush
            self._abort = gz.abort
        elif compression == "zstd":
            cctx = zstandard.ZstdCompressor(level=3 if level is None else level, threads=threads)
            z2 = cctx.compressobj()
            self._compress = z2.compress
            self._finish = z2.flush
        elif compression == "none":  # the output is the tar: one hash serves as both digests
            self._compress = bytes
            self._finish = bytes
            self.dig = self.diff
        else:
            raise LayerError(f"unknown compression {compression!r} (gzip, zstd or none)")

    def write(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) >= _BUF:
            self._drain()

    def abort(self) -> None:
        """Give up (a write failed or was cancelled): stop any compression still queued."""
        self._abort()

    def _drain(self) -> None:
        data = bytes(self.buf)
        self.buf.clear()
        self.diff.update(data)
        self._emit(self._compress(data))

    def _emit(self, data: bytes) -> None:
        if data:
            if self.dig is not self.diff:
                self.dig.update(data)
            self.out.write(data)
            self.size += len(data)

    def close(self) -> None:
        self._drain()
        self._emit(self._finish())


def _nothing() -> None:
    pass


class _ParallelGzip:
    """One gzip member compressed on every core, as pigz does: the input is cut into fixed 1 MiB
    chunks, each deflated on its own (primed with the previous 32 KiB, so the ratio barely changes)
    and ended with a sync flush; a final empty block, the CRC-32 and the length close the member.
    zlib releases the GIL, so a 200 MB layer compresses ~cores times faster than one zlib stream.
    The bytes depend only on the input and the level (not on the number of threads).  The deflate
    engine is zlib-ng: zlib's format and levels, 3x faster at level 6 here with a ratio within 3%
    (compressing new layers is most of a cold build's export)."""

    CHUNK = 1 << 20
    AHEAD = 8  # chunks in flight

    def __init__(self, level: int) -> None:
        self.level = level
        self.crc = 0
        self.length = 0
        self.pending = bytearray()
        self.prev = b""  # the last 32 KiB of input before the pending chunk
        self.futures: list = []
        self.pool = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)),
                                       thread_name_prefix="gzip")
        xfl = 2 if level == 9 else 4 if level == 1 else 0  # what zlib writes
        self.header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + bytes([xfl, 3])

    def _deflate(self, chunk: bytes, prev: bytes) -> bytes:
        z = zlib_ng.compressobj(self.level, zlib_ng.DEFLATED, -15, 9, zdict=prev) if prev else \
            zlib_ng.compressobj(self.level, zlib_ng.DEFLATED, -15, 9)
        return z.compress(chunk) + z.flush(zlib_ng.Z_SYNC_FLUSH)

    def _submit(self, chunk: bytes) -> None:
        self.crc = zlib_ng.crc32(chunk, self.crc)
        self.length += len(chunk)
        self.futures.append(self.pool.submit(self._deflate, chunk, self.prev))
        self.prev = chunk[-32768:]

    def _ready(self, wait_for: int) -> bytes:
        out = [self.header] if self.header else []
        self.header = b""
        while len(self.futures) > wait_for:
            out.append(self.futures.pop(0).result())
        return b"".join(out)

    def compress(self, data: bytes) -> bytes:
        self.pending += data
        while len(self.pending) >= self.CHUNK:
            self._submit(bytes(self.pending[:self.CHUNK]))
            del self.pending[:self.CHUNK]
        return self._ready(self.AHEAD)

    def flush(self) -> bytes:
        try:
            if self.pending:
                self._submit(bytes(self.pending))
                self.pending.clear()
            body = self._ready(0)
            end = zlib_ng.compressobj(self.level, zlib_ng.DEFLATED, -15, 9).flush(zlib_ng.Z_FINISH)  # empty final block
            return body + end + self.crc.to_bytes(4, "little") + (self.length & 0xFFFFFFFF).to_bytes(4, "little")
        finally:
            self.abort()

    def abort(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


_LIMIT = {8: 8 ** 7, 12: 8 ** 11}


def _fits(n: int, width: int) -> bool:
    return 0 <= n < _LIMIT[width]


def _pax_block(records: list[tuple[bytes, bytes]]) -> bytes:
    body = bytearray()
    for key, value in records:
        rest = b" " + key + b"=" + value + b"\n"
        n = len(rest) + 1
        while len(b"%d" % n) + len(rest) != n:
            n = len(b"%d" % n) + len(rest)
        body += b"%d" % n + rest
    hdr = _header(b"././@PaxHeader", 0o644, 0, 0, len(body), 0, b"x", b"", 0, 0)
    return hdr + bytes(body) + _pad(len(body))


def _pad(size: int) -> bytes:
    return b"\0" * (-size % 512)


_MAGIC = b"ustar\x0000"
_NO_DEV = b"\0" * 16
_TAIL = b"\0" * 167  # prefix (155) + pad (12)


def _header(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, typeflag: bytes,
            linkname: bytes, devmajor: int, devminor: int) -> bytes:
    dev = b"%07o\0%07o\0" % (devmajor, devminor) if typeflag in (b"3", b"4") else _NO_DEV
    h = b"".join((
        name[:100].ljust(100, b"\0"),
        b"%07o\0%07o\0%07o\0%011o\0%011o\0" % (mode, uid, gid, size, mtime),
        b"        ",  # checksum placeholder
        typeflag,
        linkname[:100].ljust(100, b"\0"),
        _MAGIC,
        b"\0" * 64,  # uname, gname: numeric owners only
        dev,
        _TAIL,
    ))
    return h[:148] + b"%06o\0 " % sum(h) + h[156:]


def _entry(name: bytes, st: os.stat_result | None, typeflag: bytes, *, size: int = 0, linkname: bytes = b"",
           xattrs: dict[str, bytes] | None = None, mode: int | None = None, sde: int | None = None,
           rdev: int | None = None) -> bytes:
    uid = st.st_uid if st else 0
    gid = st.st_gid if st else 0
    mtime = int(st.st_mtime) if st else 0
    if mode is None:
        mode = stat.S_IMODE(st.st_mode) if st else 0
    if sde is not None and mtime > sde:
        mtime = sde
    if mtime < 0:
        mtime = 0
    records: list[tuple[bytes, bytes]] = []
    if len(name) > 100:
        records.append((b"path", name))
    if len(linkname) > 100:
        records.append((b"linkpath", linkname))
    if not _fits(size, 12):
        records.append((b"size", b"%d" % size))
    if not _fits(uid, 8):
        records.append((b"uid", b"%d" % uid))
    if not _fits(gid, 8):
        records.append((b"gid", b"%d" % gid))
    if not _fits(mtime, 12):
        records.append((b"mtime", b"%d" % mtime))
    for key in sorted(xattrs or ()):
        records.append((b"SCHILY.xattr." + key.encode(), xattrs[key]))  # type: ignore[index]
    devmajor = devminor = 0
    if st is not None and typeflag in (b"3", b"4"):
        devmajor, devminor = os.major(st.st_rdev if rdev is None else rdev), os.minor(st.st_rdev if rdev is None else rdev)
        if not (_fits(devmajor, 8) and _fits(devminor, 8)):
            raise LayerError(f"{name.decode(errors='replace')}: device number too large for tar")
    out = _pax_block(records) if records else b""
    return out + _header(
        name,
        mode,
        uid if _fits(uid, 8) else 0,
        gid if _fits(gid, 8) else 0,
        size if _fits(size, 12) else 0,
        mtime if _fits(mtime, 12) else 0,
        typeflag,
        linkname,
        devmajor,
        devminor,
    )


def _xattrs(path: bytes) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            return {}
        raise
    out = {}
    for n in names:
        if n.startswith(_SKIP_XATTR_PREFIXES):
            continue
        try:
            out[n] = os.getxattr(path, n, follow_symlinks=False)
        except OSError as e:
            if e.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                raise
    return out


def _walk_tar(root: bytes, sink: _Sink, sde: int | None) -> None:
    """Depth-first, names sorted bytewise, each directory before its contents (`safefs.walk`: no
    recursion, every name opened relative to its parent's fd, no link followed)."""
    links: dict[tuple[int, int], bytes] = {}
    for e in safefs.walk(root, where="in a layer"):
        name, st, path = e.rel, e.st, e.xpath
        base = e.name
        prefix = name[: len(name) - len(base)]
        m = st.st_mode
        if stat.S_ISDIR(m):
            sink.write(_entry(name + b"/", st, b"5", xattrs=_xattrs(path), sde=sde))
            if is_opaque(path):
                sink.write(_entry(name + b"/" + WH_OPAQUE, st, b"0", mode=0, sde=sde))
        elif stat.S_ISREG(m):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in links:
                sink.write(_entry(name, st, b"1", linkname=links[key], sde=sde))
                continue
            node = devnodes.placeholder_of(path, st) if st.st_size == 0 else None
            if node is not None:  # the store's stand-in for a device node: the node again in the tar
                sink.write(_entry(name, st, b"3" if node[0] == stat.S_IFCHR else b"4", xattrs=_xattrs(path),
                                  sde=sde, rdev=node[1]))
                continue
            if st.st_nlink > 1:
                links[key] = name
            _write_file(sink, path, name, st, sde, fd=e.open())
        elif stat.S_ISLNK(m):
            sink.write(_entry(name, st, b"2", linkname=e.readlink(), xattrs=_xattrs(path), sde=sde))
        elif stat.S_ISCHR(m) and st.st_rdev == 0:
            sink.write(_entry(prefix + WH_PREFIX + base, st, b"0", mode=0, sde=sde))
        elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
            sink.write(_entry(name, st, b"3" if stat.S_ISCHR(m) else b"4", xattrs=_xattrs(path), sde=sde))
        elif stat.S_ISFIFO(m):
            sink.write(_entry(name, st, b"6", xattrs=_xattrs(path), sde=sde))
        # sockets and other types are not representable in a layer: skipped, like docker/buildkit
    sink.write(b"\0" * 1024)


def _write_file(sink: _Sink, path: bytes, name: bytes, st: os.stat_result, sde: int | None,
                fd: int | None = None) -> None:
    if fd is None:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        size = os.fstat(fd).st_size
        header = _entry(name, st, b"0", size=size, xattrs=_xattrs(path), sde=sde)
        if size <= _SMALL:  # one read, one sink write: most files in most layers
            data = os.read(fd, size) if size else b""
            if len(data) != size:
                raise LayerError(f"{name.decode(errors='replace')}: file changed while being archived")
            sink.write(header + data + _pad(size))
            return
        sink.write(header)
        left = size
        while left > 0:
            chunk = os.read(fd, min(left, _BUF))
            if not chunk:
                raise LayerError(f"{name.decode(errors='replace')}: file shrank while being archived")
            sink.write(chunk)
            left -= len(chunk)
        sink.write(_pad(size))
    finally:
        os.close(fd)


def write_layer(layer_dir: str | os.PathLike[str], out: BinaryIO, *, compression: str = "gzip",
                level: int | None = None, source_date_epoch: int | None = None, threads: int = 0) -> LayerBlob:
    """Write ``layer_dir`` as an OCI layer tar to ``out``; return both digests, size and media type.

    ``threads`` > 0 uses that many zstd worker threads (ignored for gzip). Output bytes depend only on
    the tree, ``compression``, ``level``, ``threads != 0`` (zstd) and ``source_date_epoch``.
    """
    root = os.fsencode(os.fspath(layer_dir))
    if not os.path.isdir(root):
        raise LayerError(f"layer directory {os.fsdecode(root)} does not exist")
    sink = _Sink(out, compression, level, threads)
    try:
        _walk_tar(root, sink, source_date_epoch)
        sink.close()
    except BaseException:
        sink.abort()
        raise
    return LayerBlob(
        digest="sha256:" + sink.dig.hexdigest(),
        diff_id="sha256:" + sink.diff.hexdigest(),
        size=sink.size,
        media_type=MEDIA_TYPES[compression],
    )


def layer_diff_id(layer_dir: str | os.PathLike[str], *, source_date_epoch: int | None = None) -> str:
    """The diff_id ``write_layer`` would produce, without compressing or storing anything."""
    return write_layer(layer_dir, _NullOut(), compression="none",
                       source_date_epoch=source_date_epoch).diff_id


class _NullOut:
    def write(self, data: bytes) -> int:
        return len(data)


def is_empty_layer(layer_dir: str | os.PathLike[str]) -> bool:
    """True if the layer changes nothing (no entries at all)."""
    with os.scandir(layer_dir) as it:
        return next(it, None) is None


class Cancelled(LayerError):
    """A compression was stopped on request; nothing of it was kept."""


class _CancellableOut:
    """Passes writes to ``out`` until ``cancel`` is set (checked once per compressed chunk)."""

    def __init__(self, out: BinaryIO, cancel: threading.Event) -> None:
        self.out = out
        self.cancel = cancel

    def write(self, data: bytes) -> int:
        if self.cancel.is_set():
            raise Cancelled("layer compression cancelled")
        return self.out.write(data)


_LAYER_LOCKS: dict[tuple[str, ...], threading.Lock] = {}
_LAYER_LOCKS_GUARD = threading.Lock()


def _layer_lock(store: "BlobStore", key: str, compression: str, variant: str) -> threading.Lock:
    """One lock per (store, layer, compression, SOURCE_DATE_EPOCH) in this process: a layer the
    build is compressing in the background (``backend.oci.precompress``) is waited for by the exporter,
    then found stored, never compressed twice at once.  (Processes may still race; the blob store is
    content-addressed and its renames atomic, so that only costs time.)"""
    k = (str(store.root), key, compression, variant)
    with _LAYER_LOCKS_GUARD:
        lock = _LAYER_LOCKS.get(k)
        if lock is None:
            lock = _LAYER_LOCKS[k] = threading.Lock()
        return lock


def write_layer_to_store(layer_dir: str | os.PathLike[str], store: "BlobStore", *, compression: str = "gzip",
                         level: int | None = None, source_date_epoch: int | None = None, threads: int = 0,
                         diff_id: str | None = None, cancel: threading.Event | None = None) -> LayerBlob:
    """Compress a layer into ``store``, reusing the blob already recorded for its diff_id.

    ``diff_id`` is a hint naming *immutable* content: the diff_id of the blob the layer was extracted
    from (a pulled layer), or a committed layer's id. If the store maps it (directly, or through the
    alias recorded the last time this layer was written with the same SOURCE_DATE_EPOCH) to a blob of
    this compression, the directory is not read at all. Without a hint the tar is hashed once (cheap)
    to look the mapping up before compressing. ``cancel`` set stops the compression (:class:`Cancelled`;
    the temp file is removed).
    """
    variant = f"sde={source_date_epoch}"
    key = diff_id if diff_id is not None else os.path.realpath(layer_dir)
    with _layer_lock(store, key, compression, variant):
        return _write_layer_to_store(layer_dir, store, compression, level, source_date_epoch, threads, diff_id,
                                     variant, cancel)


def _write_layer_to_store(layer_dir, store, compression, level, source_date_epoch, threads, diff_id, variant,
                          cancel) -> LayerBlob:
    from backend.store.blobs import CompressedBlob

    if diff_id is None:
        diff_id = layer_diff_id(layer_dir, source_date_epoch=source_date_epoch)
        hint = None
    else:
        hint = diff_id
        real = store.lookup_layer_alias(hint, variant)
        if real is not None and store.lookup_compressed(real, compression) is not None:
            diff_id = real
    hit = store.lookup_compressed(diff_id, compression)
    if hit is not None:
        return LayerBlob(hit.digest, diff_id, hit.size, hit.media_type)
    with store.writer() as w:
        blob = write_layer(layer_dir, w if cancel is None else _CancellableOut(w, cancel), compression=compression,
                           level=level, source_date_epoch=source_date_epoch, threads=threads)
        w.commit(blob.digest, blob.size)
    store.record_compressed(blob.diff_id, compression, CompressedBlob(blob.digest, blob.size, blob.media_type))
    if hint is not None and hint != blob.diff_id:
        store.record_layer_alias(hint, variant, blob.diff_id)
    return blob


def write_layers_to_store(layer_dirs: Iterable[str | os.PathLike[str] | tuple[str | os.PathLike[str], str | None]],
                          store: "BlobStore", *, compression: str = "gzip", level: int | None = None,
                          source_date_epoch: int | None = None, max_workers: int | None = None,
                          threads: int = 0) -> list[LayerBlob]:
    """Compress several layers in parallel (zlib/zstd/sha256 release the GIL); results in input order.

    Each item is a layer dir or ``(layer_dir, diff_id_hint)``.
    """
    items = [d if isinstance(d, tuple) else (d, None) for d in layer_dirs]
    workers = max_workers or min(len(items), os.cpu_count() or 1) or 1
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="compress") as ex:
        futs = [ex.submit(write_layer_to_store, d, store, compression=compression, level=level,
                          source_date_epoch=source_date_epoch, threads=threads, diff_id=h) for d, h in items]
        return [f.result() for f in futs]


# ---------------------------------------------------------------------------------------------
# reading

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class _Decompressed(io.RawIOBase):
    """Sniffs gzip/zstd/plain, decompresses, hashes the tar (diff_id) and enforces the byte limit."""

    def __init__(self, src: BinaryIO, media_type: str, limit: int):
        self.src = src
        self.limit = limit
        self.total = 0
        self.hash = hashlib.sha256()
        head = _read_exact(src, 4)
        # trust the bytes, not the label: registries and tools mislabel layers both ways
        kind = "gzip" if head.startswith(GZIP_MAGIC) else "zstd" if head.startswith(ZSTD_MAGIC) else "none"
        self.kind = kind
        self._pending = head
        self._eof = False
        self._member_done = False
        self._out = bytearray()
        if kind == "gzip":
            self._z = zlib_ng.decompressobj(47)
        elif kind == "zstd":
            self._zs = zstandard.ZstdDecompressor().decompressobj()

    def readable(self) -> bool:
        return True

    def _raw(self) -> bytes:
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        return self.src.read(_BUF)

    def _fill(self, want: int) -> None:
        while len(self._out) < want and not self._eof:
            data = self._raw()
            if self.kind == "none":
                if not data:
                    self._eof = True
                self._out += data
            elif self.kind == "gzip":
                if not data:
                    self._eof = True
                    break
                while data:
                    if self._member_done and not data.strip(b"\0"):
                        break  # zero padding after the last member (some tools pad to a record size)
                    self._member_done = False
                    self._out += self._z.decompress(data, _BUF * 4)
                    data = self._z.unconsumed_tail
                    if self._z.eof:  # multi-member gzip: start the next member with what is left
                        data = self._z.unused_data
                        self._z = zlib_ng.decompressobj(47)
                        self._member_done = True
                    if len(self._out) > _BUF * 8 and data:
                        self._pending = data + self._pending
                        break
            else:
                if not data:
                    self._eof = True
                    break
                self._out += self._zs.decompress(data)
                if self._zs.eof:
                    rest = self._zs.unused_data
                    self._zs = zstandard.ZstdDecompressor().decompressobj()
                    if rest:
                        self._pending = rest + self._pending
            if self.total + len(self._out) > self.limit:
                raise LayerError(f"layer expands beyond the limit of {self.limit} bytes (archive bomb?)")

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        n = len(b)
        self._fill(n)
        chunk = bytes(self._out[:n])
        del self._out[:n]
        self.total += len(chunk)
        if self.total > self.limit:
            raise LayerError(f"layer expands beyond the limit of {self.limit} bytes (archive bomb?)")
        self.hash.update(chunk)
        b[: len(chunk)] = chunk
        return len(chunk)

    def drain(self) -> None:
        while self.read(_BUF):
            pass


def _read_exact(f: BinaryIO, n: int) -> bytes:
    out = b""
    while len(out) < n:
        d = f.read(n - len(out))
        if not d:
            break
        out += d
    return out


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
    def __init__(self, dest: str | os.PathLike[str]):
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
            if xname.startswith(_SKIP_XATTR_PREFIXES):
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
        pfd = self.open_dir(tuple(parent), True, ti.name)
        self.truncate(len(parent))  # this entry may replace `base`: no open dir below the parent
        try:
            if base == WH_OPAQUE:
                os.setxattr(pfd, OPAQUE_XATTR, b"y")
                return
            if base.startswith(WH_PREFIX):
                target = base[len(WH_PREFIX):]
                if target in (b"", b".", b".."):
                    raise LayerError(f"refusing whiteout entry {ti.name!r}")
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
                    while True:
                        chunk = src.read(_BUF)
                        if not chunk:
                            break
                        os.write(fd, chunk)
                    self._meta(fd, pfd, base, ti)
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


def extract_stored_layer(store: "BlobStore", desc: dict, dest_dir: str | os.PathLike[str], *,
                         expected_diff_id: str | None = None, limits: ExtractLimits = ExtractLimits()) -> ExtractResult:
    """Extract a layer blob from ``store`` (descriptor: digest, size, mediaType) and record
    diff_id -> blob in the store, so exporting the unchanged layer later reuses the original blob
    (pass ``LayerSource(path, diff_id=result.diff_id)``). ``expected_diff_id`` comes from the image
    config's ``rootfs.diff_ids``; a mismatch is an error."""
    from backend.store.blobs import CompressedBlob

    with store.open(desc["digest"]) as f:
        head = f.read(4)
        f.seek(0)
        res = extract_layer(f, desc.get("mediaType", MT_LAYER), dest_dir, limits=limits)
    if expected_diff_id is not None and res.diff_id != expected_diff_id:
        raise LayerError(f"layer {desc['digest']} uncompresses to {res.diff_id}, but the image config says "
                         f"{expected_diff_id}")
    kind = "gzip" if head.startswith(GZIP_MAGIC) else "zstd" if head.startswith(ZSTD_MAGIC) else "none"
    media_type = desc.get("mediaType") or MEDIA_TYPES[kind]
    if "docker" in media_type:
        media_type = MEDIA_TYPES[kind]
    store.record_compressed(res.diff_id, kind, CompressedBlob(desc["digest"], store.size(desc["digest"]), media_type))
    return res


def extract_layer(blob_stream: BinaryIO, media_type: str, dest_dir: str | os.PathLike[str], *,
                  limits: ExtractLimits = ExtractLimits()) -> ExtractResult:
    """Untar a (possibly compressed) layer into ``dest_dir`` in overlay upper-dir format."""
    src = _Decompressed(blob_stream, media_type, limits.max_bytes)
    ex = _Extractor(dest_dir)
    count = 0
    try:
        try:
            tf = tarfile.open(fileobj=io.BufferedReader(src, _BUF), mode="r|", errorlevel=2)
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
                         skipped=tuple(ex.skipped))


def _warn(text: str) -> None:
    import sys

    sys.stderr.write(f"warning: {text}\n")
