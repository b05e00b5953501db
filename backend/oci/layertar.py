"""Layer directories (overlayfs upper-dir format) to OCI layer tars: the exact bytes.

A deterministic tar (depth-first, names sorted bytewise, directories before their contents, numeric
owners, PAX records for long names, big files and xattrs), optionally with every mtime clamped to
SOURCE_DATE_EPOCH, compressed (``compression.LayerSink``) while both digests (diff_id of the tar,
digest of the compressed stream) are computed in the same pass.  The tar encoder is our own so that
every byte is under our control (``export/rootfs.py`` writes the flattened image with the same
entries).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import BinaryIO

from backend.errors import LayerError
from backend.fs import devnodes, safefs
from backend.fs.layerformat import OVERLAY_XATTR_PREFIXES, is_opaque, read_xattrs
from backend.oci.compression import BUF, MEDIA_TYPES, LayerSink

WH_PREFIX = b".wh."
WH_OPAQUE = b".wh..wh..opq"
# xattrs that describe the overlay (or the host) rather than the file; never put in a layer tar, never
# taken from one (user.overlay.* would steer a rootless `userxattr` overlay mount)
SKIP_XATTR_PREFIXES = (*OVERLAY_XATTR_PREFIXES, "security.selinux", "system.", *devnodes.XATTR_NAMES)
_SMALL = 256 << 10


@dataclass(frozen=True)
class LayerBlob:
    """A compressed layer: ``digest``/``size`` of the blob, ``diff_id`` of the uncompressed tar."""

    digest: str
    diff_id: str
    size: int
    media_type: str



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


def tar_entry(name: bytes, st: os.stat_result | None, typeflag: bytes, *, size: int = 0, linkname: bytes = b"",
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



def layer_xattrs(path: bytes) -> dict[str, bytes]:
    """The xattrs a layer tar carries for ``path`` (overlay's and the host's own left out)."""
    return read_xattrs(path, SKIP_XATTR_PREFIXES)


def _walk_tar(root: bytes, sink: LayerSink, sde: int | None) -> None:
    """Depth-first, names sorted bytewise, each directory before its contents (`safefs.walk`: no
    recursion, every name opened relative to its parent's fd, no link followed)."""
    links: dict[tuple[int, int], bytes] = {}
    for e in safefs.walk(root, where="in a layer"):
        name, st, path = e.rel, e.st, e.xpath
        base = e.name
        prefix = name[: len(name) - len(base)]
        m = st.st_mode
        if stat.S_ISDIR(m):
            sink.write(tar_entry(name + b"/", st, b"5", xattrs=layer_xattrs(path), sde=sde))
            if is_opaque(path):
                sink.write(tar_entry(name + b"/" + WH_OPAQUE, st, b"0", mode=0, sde=sde))
        elif stat.S_ISREG(m):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in links:
                sink.write(tar_entry(name, st, b"1", linkname=links[key], sde=sde))
                continue
            node = devnodes.placeholder_of(path, st) if st.st_size == 0 else None
            if node is not None:  # the store's stand-in for a device node: the node again in the tar
                sink.write(tar_entry(name, st, b"3" if node[0] == stat.S_IFCHR else b"4", xattrs=layer_xattrs(path),
                                  sde=sde, rdev=node[1]))
                continue
            if st.st_nlink > 1:
                links[key] = name
            write_file_entry(sink, path, name, st, sde, fd=e.open())
        elif stat.S_ISLNK(m):
            sink.write(tar_entry(name, st, b"2", linkname=e.readlink(), xattrs=layer_xattrs(path), sde=sde))
        elif stat.S_ISCHR(m) and st.st_rdev == 0:
            sink.write(tar_entry(prefix + WH_PREFIX + base, st, b"0", mode=0, sde=sde))
        elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
            sink.write(tar_entry(name, st, b"3" if stat.S_ISCHR(m) else b"4", xattrs=layer_xattrs(path), sde=sde))
        elif stat.S_ISFIFO(m):
            sink.write(tar_entry(name, st, b"6", xattrs=layer_xattrs(path), sde=sde))
        # sockets and other types are not representable in a layer: skipped, like docker/buildkit
    sink.write(b"\0" * 1024)


def write_file_entry(sink: LayerSink, path: bytes, name: bytes, st: os.stat_result, sde: int | None,
                fd: int | None = None) -> None:
    if fd is None:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        size = os.fstat(fd).st_size
        header = tar_entry(name, st, b"0", size=size, xattrs=layer_xattrs(path), sde=sde)
        if size <= _SMALL:  # one read, one sink write: most files in most layers
            data = os.read(fd, size) if size else b""
            if len(data) != size:
                raise LayerError(f"{name.decode(errors='replace')}: file changed while being archived")
            sink.write(header + data + _pad(size))
            return
        sink.write(header)
        left = size
        while left > 0:
            chunk = os.read(fd, min(left, BUF))
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
    sink = LayerSink(out, compression, level, threads)
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
