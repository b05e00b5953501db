"""Writing an export's files safely, and not writing them again when they are already there.

A no-op rebuild with ``--output type=oci,dest=x.tar`` used to rewrite the whole archive (48 MB for
debian, ~0.1 s of a 0.5 s build; seconds for a big image). ``ExportMemo`` remembers, per destination,
*what* was written there — a digest the exporter computes from content-addressed inputs (the index
of an OCI layout, the layer ids of a root filesystem), so equal ``what`` means equal bytes — and the
identity of every file written (``lstat``: device, inode, type and mode, size, mtime and ctime in
ns). An export whose ``what`` and file identities are unchanged is skipped. Anything else — another
image, a file someone rewrote, truncated, replaced, touched or swapped for a symlink (ctime cannot be
set back), a memo that cannot be read — is written again, atomically, as always.

Racing writers: a change in the same clock tick as a stat could keep every field. So ``remember``
waits until the clock has passed the files' newest ctime by two ticks of the kernel's coarse clock
(~8 ms at 250 Hz after a real write, none after a skip) and stats them again: any later change gets
a later ctime. (A change by another process inside that tick, right after our rename, would still
pass: only reading the bytes back could tell, which costs as much as writing them.) A filesystem
whose times are whole seconds is never recorded (there the memo is not used).

The records live in the store (``exports/``, private like the rest) and name the destination by
its absolute path; nothing from the destination is ever trusted beyond its ``lstat``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

from backend.errors import ExportError


def _settle_ns() -> int:
    """Two ticks of the coarse clock file times come from (4 ms at 250 Hz); 20 ms (two ticks at
    100 Hz, the coarsest Linux has) where it cannot be asked."""
    try:
        tick = time.clock_getres(5)  # CLOCK_REALTIME_COARSE
    except (OSError, AttributeError):
        return 20_000_000
    return min(20_000_000, max(2_000_000, int(2 * tick * 1e9)))


SETTLE_NS = _settle_ns()


def what_digest(kind: str, *parts: bytes) -> str:
    """The ``what`` of an export: a digest over its kind and the bytes that decide its content."""
    h = hashlib.sha256(b"irctl-export-v1\0" + kind.encode() + b"\0")
    for p in parts:
        h.update(len(p).to_bytes(8, "big") + p)
    return "sha256:" + h.hexdigest()


def _identity(path: Path) -> list[int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class ExportMemo:
    """What was last exported to each destination, kept under ``root/exports``."""

    def __init__(self, root: str | os.PathLike[str]):
        self.dir = Path(root) / "exports"

    def _record_path(self, dest: Path) -> Path:
        return self.dir / (hashlib.sha256(os.fsencode(os.path.abspath(dest))).hexdigest() + ".json")

    def unchanged(self, dest: str | os.PathLike[str], what: str) -> dict | None:
        """The record of ``dest`` (with its ``result``) if it holds exactly ``what`` still, else None."""
        dest = Path(os.path.abspath(dest))
        try:
            rec = json.loads(self._record_path(dest).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(rec, dict) or rec.get("dest") != os.fspath(dest) or rec.get("what") != what:
            return None
        files = rec.get("files")
        if not isinstance(files, list) or not files:
            return None
        for entry in files:
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
                return None
            rel, ident = entry
            if rel.startswith("/") or ".." in rel.split("/") or _identity(dest / rel if rel else dest) != ident:
                return None
        return rec

    def current(self, dest: str | os.PathLike[str]) -> dict | None:
        """The record of ``dest`` whatever it says (for a caller that memoises a whole build)."""
        try:
            rec = json.loads(self._record_path(Path(os.path.abspath(dest))).read_text())
        except (OSError, ValueError):
            return None
        return rec if isinstance(rec, dict) else None

    def forget(self, dest: str | os.PathLike[str]) -> None:
        with contextlib.suppress(OSError):
            self._record_path(Path(os.path.abspath(dest))).unlink()

    def remember(self, dest: str | os.PathLike[str], what: str, members: Sequence[str] = ("",),
                 result: str = "", written: dict[str, os.stat_result] | None = None) -> None:
        """Record that ``dest`` now holds ``what``; ``members``: the files written, relative to
        ``dest`` ("" is ``dest`` itself); ``written``: the fstat of the files we wrote, by member,
        so a file another export renamed over ours meanwhile is not taken for ours. Never fails
        the export: at worst the next one rewrites."""
        dest = Path(os.path.abspath(dest))
        files = []
        for rel in members:
            ident = _identity(dest / rel if rel else dest)
            mine = (written or {}).get(rel)
            if ident is None or mine is not None and (ident[0], ident[1]) != (mine.st_dev, mine.st_ino):
                self.forget(dest)
                return
            files.append([rel, ident])
        newest = max(f[1][5] for f in files)
        if any(f[1][5] % 1_000_000_000 == 0 for f in files) or newest > time.time_ns() + 1_000_000_000:
            self.forget(dest)  # whole-second times (or a clock far off): a same-tick change would hide
            return
        wait = newest + SETTLE_NS - time.time_ns()
        if wait > 0:  # then look again: a change after this second look gets a later ctime
            time.sleep(wait / 1e9)
            if [[rel, _identity(dest / rel if rel else dest)] for rel, _ in files] != files:
                self.forget(dest)  # touched meanwhile: not ours to vouch for
                return
        try:
            # the no-op rebuild (irctl/fastpath.py) imports this module only to read records:
            # lazy: safefs loads ctypes and libc (~37 ms, -X importtime)
            from backend.fs.safefs import private_dir

            private_dir(self.dir)
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".rec-")
            with os.fdopen(fd, "w") as f:
                json.dump({"dest": os.fspath(dest), "what": what, "files": files, "result": result}, f)
            os.replace(tmp, self._record_path(dest))
        except OSError:
            self.forget(dest)


@contextlib.contextmanager
def replacing(dest: str | os.PathLike[str], mode: int | None = None) -> Iterator[BinaryIO]:
    """A new file that becomes ``dest`` (atomically, by rename) when the block ends without error.

    It is created under a random name beside ``dest`` with O_EXCL (what ``mkstemp`` does), so a
    symlink planted under a predictable temporary name cannot redirect the write; the rename
    replaces a link at ``dest`` itself instead of writing through it. ``mode``: default 0666 less
    the umask, as ``open(dest, "w")`` would give."""
    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(dir=dest.parent or ".", prefix=f".{dest.name}.", suffix=".partial")
    try:
        os.fchmod(fd, _default_mode() if mode is None else mode)
        with os.fdopen(fd, "wb") as f:
            yield f  # type: ignore[misc]
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _default_mode() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def refuse_link(path: Path, what: str) -> None:
    """Refuse to write through ``path`` when it is a symlink (a directory inside a destination)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISLNK(os.lstat(path).st_mode):
            raise ExportError(f"{path}: {what} is a symbolic link; refusing to write through it")
