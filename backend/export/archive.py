"""Entries of the archives exports write: headers with fixed owner and time (so an archive's bytes
depend only on its contents and ``SOURCE_DATE_EPOCH``), and file bodies copied by the kernel."""

from __future__ import annotations

import io
import os
import tarfile


def add_file(tf: tarfile.TarFile, ti: tarfile.TarInfo, path: str | os.PathLike[str]) -> None:
    """``tf.addfile(ti, open(path, "rb"))`` for an uncompressed archive written to a real file, with
    the contents copied by the kernel (copy_file_range) instead of through 16 KiB Python reads: the
    same bytes, ~2x faster for a 200 MB layer blob."""
    out = tf.fileobj
    if not isinstance(out, (io.BufferedWriter, io.FileIO)):  # a compressed or streamed archive
        with open(path, "rb") as f:
            tf.addfile(ti, f)
        return
    out_fd = out.fileno()
    buf = ti.tobuf(tf.format, tf.encoding, tf.errors)
    out.write(buf)  # type: ignore[union-attr]
    tf.offset += len(buf)
    out.flush()  # type: ignore[union-attr]
    with open(path, "rb") as f:
        left = ti.size
        try:
            while left > 0:
                n = os.copy_file_range(f.fileno(), out_fd, left)
                if n <= 0:
                    break
                left -= n
        except OSError:
            pass
        while left > 0:  # copy_file_range refused (another filesystem, ...): the ordinary way
            chunk = f.read(min(left, 1 << 20))
            if not chunk:
                raise OSError(f"{os.fspath(path)}: file shrank while being archived")
            out.write(chunk)  # type: ignore[union-attr]
            left -= len(chunk)
    blocks, rest = divmod(ti.size, tarfile.BLOCKSIZE)
    if rest:
        out.write(tarfile.NUL * (tarfile.BLOCKSIZE - rest))  # type: ignore[union-attr]
        blocks += 1
    tf.offset += blocks * tarfile.BLOCKSIZE
    tf.members.append(ti)


def tar_info(name: str, mtime: int, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = mode
    ti.size = size
    ti.mtime = mtime
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti
