"""Content-addressed blob store: every blob lives at ``blobs/sha256/<hex>`` and is what its name says.

Blobs (compressed layers, manifests, configs) enter only through :meth:`BlobStore.ingest` or
:meth:`BlobStore.write_bytes`, which stream to ``tmp/``, fsync, verify the digest and rename atomically,
so a reader never sees a partial or wrong blob. A small sqlite table remembers which compressed blob
was made from which uncompressed layer (diff_id + compression), so a layer is never compressed twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import sqlite3
import tempfile
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from backend.errors import BackendError
from backend.fs import safefs

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
CHUNK = 1 << 20


class BlobError(BackendError):
    """A blob is missing, malformed or does not match its digest."""


class DigestMismatch(BlobError):
    """Content read from somewhere does not hash to the digest it was announced with."""


def check_digest(digest: str) -> str:
    """Return ``digest`` if it is a well-formed sha256 digest, else raise BlobError."""
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise BlobError(f"unsupported or malformed digest {digest!r} (want sha256:<64 hex>)")
    return digest


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class CompressedBlob:
    """A compressed layer blob recorded for an uncompressed diff_id."""

    digest: str
    size: int
    media_type: str


class BlobStore:
    """Blobs under ``root/blobs/sha256``, temp files under ``root/tmp``, mapping in ``root/blobs.db``."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.blob_dir = self.root / "blobs" / "sha256"
        self.tmp_dir = self.root / "tmp"
        for d in (self.root, self.blob_dir.parent, self.blob_dir, self.tmp_dir):
            safefs.private_dir(d)
        self._db_path = self.root / "blobs.db"
        with closing(self._connect()) as db, db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS compressed ("
                " diff_id TEXT NOT NULL, compression TEXT NOT NULL,"
                " digest TEXT NOT NULL, size INTEGER NOT NULL, media_type TEXT NOT NULL,"
                " PRIMARY KEY (diff_id, compression))"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS layer_alias ("
                " key TEXT NOT NULL, variant TEXT NOT NULL, diff_id TEXT NOT NULL, PRIMARY KEY (key, variant))"
            )

    @property
    def db_path(self) -> Path:
        return self._db_path

    # -- sqlite: one short-lived connection per call, WAL, so threads and processes can share it --
    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._db_path, timeout=60, isolation_level=None)
        db.execute("PRAGMA busy_timeout=60000")
        try:
            db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:  # another process is switching it right now; WAL is persistent
            pass
        return db

    # -- lookup --
    def path(self, digest: str) -> Path:
        return self.blob_dir / check_digest(digest).split(":", 1)[1]

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        return self._existing(digest).stat().st_size

    def open(self, digest: str) -> BinaryIO:
        return open(self._existing(digest), "rb")

    def read_bytes(self, digest: str) -> bytes:
        return self._existing(digest).read_bytes()

    def _existing(self, digest: str) -> Path:
        p = self.path(digest)
        if not p.is_file():
            raise BlobError(f"blob {digest} not in store {self.root}")
        return p

    def __iter__(self) -> Iterator[str]:
        for p in sorted(self.blob_dir.iterdir()):
            if len(p.name) == 64:
                yield "sha256:" + p.name

    # -- writing --
    def write_bytes(self, data: bytes) -> str:
        digest = sha256_digest(data)
        if not self.has(digest):
            self._commit_bytes(data, digest)
        return digest

    def _commit_bytes(self, data: bytes, digest: str) -> None:
        fd, tmp = locked_temp(self.tmp_dir, "blob-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
                self._rename_in(tmp, digest)  # before the close: the lock is held until it has gone
        except BaseException:
            _unlink_quiet(tmp)
            raise

    def ingest(self, stream: BinaryIO, expected_digest: str | None = None, size: int | None = None) -> str:
        """Copy ``stream`` into the store and return its digest.

        With ``expected_digest`` the content must hash to it (and be ``size`` bytes if given);
        otherwise nothing is stored and :class:`DigestMismatch` is raised.
        """
        if expected_digest is not None:
            check_digest(expected_digest)
        writer = self.writer()
        try:
            while True:
                chunk = stream.read(CHUNK)
                if not chunk:
                    break
                writer.write(chunk)
                if size is not None and writer.size > size:
                    raise DigestMismatch(f"blob {expected_digest or '(unnamed)'} is larger than its announced size {size}")
            return writer.commit(expected_digest, size)
        finally:
            writer.abort()

    def writer(self) -> "BlobWriter":
        """A file-like sink that hashes what it is given; ``commit()`` moves it into the store."""
        return BlobWriter(self)

    def _rename_in(self, tmp: str, digest: str) -> None:
        dest = self.path(digest)
        os.replace(tmp, dest)
        dfd = os.open(self.blob_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def verify(self, digest: str) -> None:
        """Re-hash a stored blob; a corrupt one is deleted and DigestMismatch raised."""
        p = self._existing(digest)
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                h.update(chunk)
        actual = "sha256:" + h.hexdigest()
        if actual != digest:
            _unlink_quiet(p)
            raise DigestMismatch(f"stored blob {digest} hashes to {actual}; removed it")

    def delete(self, digest: str) -> None:
        _unlink_quiet(self.path(digest))

    # -- diff_id + compression -> compressed blob --
    def lookup_compressed(self, diff_id: str, compression: str) -> CompressedBlob | None:
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT digest, size, media_type FROM compressed WHERE diff_id=? AND compression=?",
                (diff_id, compression),
            ).fetchone()
        if row is None or not self.has(row[0]):
            return None
        return CompressedBlob(row[0], int(row[1]), row[2])

    def record_compressed(self, diff_id: str, compression: str, blob: CompressedBlob) -> None:
        check_digest(diff_id)
        check_digest(blob.digest)
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT OR REPLACE INTO compressed (diff_id, compression, digest, size, media_type)"
                " VALUES (?, ?, ?, ?, ?)",
                (diff_id, compression, blob.digest, blob.size, blob.media_type),
            )


    # -- immutable layer id (+ tar variant, e.g. SOURCE_DATE_EPOCH) -> diff_id of its tar --
    def lookup_layer_alias(self, key: str, variant: str) -> str | None:
        with closing(self._connect()) as db:
            row = db.execute("SELECT diff_id FROM layer_alias WHERE key=? AND variant=?", (key, variant)).fetchone()
        return row[0] if row else None

    def record_layer_alias(self, key: str, variant: str, diff_id: str) -> None:
        check_digest(diff_id)
        with closing(self._connect()) as db, db:
            db.execute("INSERT OR REPLACE INTO layer_alias (key, variant, diff_id) VALUES (?, ?, ?)",
                       (key, variant, diff_id))


class BlobWriter:
    """Temp file in the store's ``tmp/`` that hashes as it is written."""

    def __init__(self, store: BlobStore):
        self.store = store
        fd, self.tmp_path = locked_temp(store.tmp_dir, "ingest-")
        self._f = os.fdopen(fd, "wb")
        self._h = hashlib.sha256()
        self.size = 0
        self._done = False

    def write(self, data: bytes) -> int:
        self._h.update(data)
        self._f.write(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self._f.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self._h.hexdigest()

    def commit(self, expected_digest: str | None = None, size: int | None = None) -> str:
        digest = self.digest
        if expected_digest is not None and digest != expected_digest:
            self.abort()
            raise DigestMismatch(f"content hashes to {digest}, expected {expected_digest}; not stored")
        if size is not None and self.size != size:
            self.abort()
            raise DigestMismatch(f"blob {digest} is {self.size} bytes, expected {size}; not stored")
        self._f.flush()
        os.fsync(self._f.fileno())
        try:  # renamed (or removed) while its lock is held: a free lock says its writer died
            if self.store.has(digest):
                _unlink_quiet(self.tmp_path)
            else:
                self.store._rename_in(self.tmp_path, digest)
        finally:
            self._f.close()
        self._done = True
        return digest

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self._f.close()
            _unlink_quiet(self.tmp_path)

    def __enter__(self) -> "BlobWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


def locked_temp(tmp_dir: Path, prefix: str) -> tuple[int, str]:
    """A new temp file ``tmp_dir/PREFIXxxxx`` for a blob write, locked (``flock``) *before* it has that
    name: it is made as ``.PREFIXxxxx``, locked, then linked under the name.  So a ``PREFIX*`` file
    whose lock is free belongs to a writer that died, and the next session removes it at once
    (``backend.store.recovery``); only a writer that died between making and naming it leaves a
    dotted one, removed after a grace period."""
    fd, hidden = tempfile.mkstemp(dir=tmp_dir, prefix="." + prefix)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held while written: the lock says the writer lives
        while True:
            name = os.path.join(tmp_dir, prefix + os.urandom(8).hex())
            try:
                os.link(hidden, name)  # (never replaces: link fails on an existing name)
                break
            except FileExistsError:
                continue
        os.unlink(hidden)
    except BaseException:
        os.close(fd)
        _unlink_quiet(hidden)
        raise
    return fd, name


def _unlink_quiet(p: str | os.PathLike[str]) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass
