"""The cache store: committed layers, persistent cache mounts, blobs and the index that maps cache
keys to results.  Layout (docs/architecture.md)::

    blobs/sha256/<hex>   content-addressed blobs (BlobStore)       layers/<hex>/   immutable layer dirs
    mounts/<hex>/        persistent cache mounts                    index.db        sqlite: key → result
    tmp/                 work dirs on the same filesystem, so renames into place are atomic
    locks/               fcntl lock files                           exports/        what each export dest holds

Crash safety: a layer is built in ``tmp/``, made durable (``backend.store.durable``; a failure fails
the commit) and renamed into ``layers/`` (an existing one wins; ours is discarded); an index row is
written, in one sqlite transaction, only after every layer it names is in place.  A killed build
leaves its ``tmp/s-*`` work dir, what it mounted there and the containers it ran: the next session
reaps them once its lock is free (``backend.store.recovery``).  Sharing: every solve holds a *shared* lock on ``locks/gc.lock`` for
its whole run; ``prune`` takes it exclusively, so it never deletes what a running build uses.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from backend.errors import CacheError
from backend.fs import safefs
from backend.store.blobs import BlobStore
from backend.store.durable import dir_size, fsync_dir, fsync_tree
from backend.store.gc import image_closure, prune_lru
from backend.store.records import Output, Usage
from backend.store.recovery import RuntimeReaper, clean_stale, end_session

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
  key TEXT PRIMARY KEY, outputs TEXT NOT NULL, created REAL NOT NULL, last_used REAL NOT NULL);
CREATE TABLE IF NOT EXISTS layers (
  id TEXT PRIMARY KEY, size INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, last_used REAL NOT NULL,
  blob TEXT, media_type TEXT, blob_size INTEGER);
CREATE TABLE IF NOT EXISTS selections (
  identity TEXT NOT NULL, action TEXT NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (identity, action));
"""


def default_root(explicit: str | os.PathLike | None = None) -> Path:
    """``--cache-dir``, ``$IRCTL_CACHE_DIR``, ``$XDG_CACHE_HOME/irctl``, ``~/.cache/irctl``."""
    if explicit:
        return Path(explicit)
    if os.environ.get("IRCTL_CACHE_DIR"):
        return Path(os.environ["IRCTL_CACHE_DIR"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "irctl"
    return Path.home() / ".cache" / "irctl"


def hexof(digest: str) -> str:
    return digest.split(":", 1)[-1]


class CacheStore:
    """The store under ``root``.  ``reap_runtime_dir``: how to kill the containers of a build that
    died and remove its runtime dir (``backend.runtime.container.reap_dead_build``, given by who
    runs builds: the runtime ranks beside the store); without it, such dirs are left for a store
    that has it."""

    def __init__(self, root: str | os.PathLike, *, reap_runtime_dir: RuntimeReaper | None = None):
        self.root = Path(root).absolute()
        self.reap_runtime_dir = reap_runtime_dir
        self.layers_dir = self.root / "layers"
        self.mounts_dir = self.root / "mounts"
        self.tmp_dir = self.root / "tmp"
        self.locks_dir = self.root / "locks"
        safefs.private_dir(self.root)  # 0700, and an older store's 0755 fixed: nothing for other users
        for d in (self.layers_dir, self.mounts_dir, self.tmp_dir, self.locks_dir):
            safefs.private_dir(d)
        self.blobs = BlobStore(self.root)
        self.index_path = self.root / "index.db"
        try:
            with self._db() as db:
                db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise CacheError(f"cache index {self.index_path} is unusable: {e}") from None

    # -- sqlite -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.index_path, timeout=60, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=60000")
            with contextlib.suppress(sqlite3.OperationalError):
                db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            yield db
        finally:
            db.close()

    # -- locks and sessions ------------------------------------------------------------------
    def _lock(self, name: str, mode: int, timeout: float | None = None) -> int:
        fd = os.open(self.locks_dir / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, mode | (fcntl.LOCK_NB if deadline is not None else 0))
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:  # type: ignore[operator]
                    os.close(fd)
                    raise
                time.sleep(0.05)

    @contextlib.contextmanager
    def locked(self, name: str, *, exclusive: bool = True) -> Iterator[None]:
        fd = self._lock(name, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def session(self) -> Iterator[Path]:
        """One build's use of the store: a shared GC lock and a private work dir under ``tmp/``."""
        gc_fd = self._lock("gc.lock", fcntl.LOCK_SH)
        try:
            self.clean_stale()
            # the lock is held before it appears under its name: another build's clean_stale() could
            # otherwise take a just-created s-*.lock for a dead session's and delete our work dir
            lock_fd, tmp_lock = tempfile.mkstemp(prefix="s-", suffix=".lock.tmp", dir=self.tmp_dir)
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            work = Path(tempfile.mkdtemp(prefix="s-", dir=self.tmp_dir))
            os.rename(tmp_lock, f"{work}.lock")
            idle = self._idle_connections()
            try:
                yield work
            finally:
                for db in idle:
                    db.close()
                end_session(work)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{work}.lock")
                os.close(lock_fd)
        finally:
            os.close(gc_fd)

    def _idle_connections(self) -> list[sqlite3.Connection]:
        """One idle connection to each sqlite index for the length of a session.  Every store call
        opens and closes its own connection, and the close of the *last* connection to a WAL
        database checkpoints it (an fsync, then the WAL file is deleted): 2-3 ms per call here, four
        or five times per small layer.  While this one stays open no other close is the last; the
        WAL is checkpointed at SQLite's size threshold and once when the session ends.  Durability
        is unchanged where it matters: a layer is fsynced before the row naming it is written."""
        idle = []
        for path in (self.index_path, self.blobs.db_path):
            with contextlib.suppress(sqlite3.Error):
                db = sqlite3.connect(path, timeout=60, isolation_level=None)
                try:
                    db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # maps the WAL index
                except sqlite3.Error:
                    db.close()
                    continue
                idle.append(db)
        return idle

    def clean_stale(self) -> None:
        """Remove what builds that died left in ``tmp/`` (``backend.store.recovery``)."""
        clean_stale(self.tmp_dir, self.locks_dir, self.reap_runtime_dir)

    # -- results ------------------------------------------------------------------------------
    def lookup(self, key: str) -> list[Output] | None:
        """The outputs cached under ``key`` if every layer they name is present or extractable."""
        with self._db() as db:
            row = db.execute("SELECT outputs FROM results WHERE key=?", (key,)).fetchone()
            if row is None:
                return None
            outputs = [Output.from_json(d) for d in json.loads(row[0])]
            for out in outputs:
                for lid in out.layers:
                    if not self.has_layer(lid) and not self._extractable(db, lid):
                        return None
            now = time.time()
            db.execute("UPDATE results SET last_used=? WHERE key=?", (now, key))
            ids = sorted({lid for o in outputs for lid in o.layers})
            db.executemany("UPDATE layers SET last_used=? WHERE id=?", [(now, i) for i in ids])
        return outputs

    def record(self, key: str, outputs: list[Output]) -> None:
        now = time.time()
        data = json.dumps([o.to_json() for o in outputs], sort_keys=True)
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO results (key, outputs, created, last_used) VALUES (?,?,?,?)",
                       (key, data, now, now))

    def selection(self, identity: str, action: str) -> str | None:
        """The remembered checksum of what copy ``action`` selects from the snapshot ``identity``."""
        with self._db() as db:
            row = db.execute("SELECT digest FROM selections WHERE identity=? AND action=?",
                             (identity, action)).fetchone()
        return row[0] if row else None

    def record_selection(self, identity: str, action: str, digest: str) -> None:
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO selections (identity, action, digest) VALUES (?,?,?)",
                       (identity, action, digest))

    # -- layers -------------------------------------------------------------------------------
    def layer_path(self, layer_id: str) -> Path:
        return self.layers_dir / hexof(layer_id)

    def has_layer(self, layer_id: str) -> bool:
        return self.layer_path(layer_id).is_dir()

    def new_work_dir(self, session: Path, prefix: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=session))

    def commit_layer(self, upper: Path, layer_id: str) -> Path:
        """Move the finished layer dir ``upper`` (in tmp) to ``layers/<id>``; an existing one wins.
        Raises ``CacheError`` when the layer cannot be made durable: then no row names it and it is
        not under ``layers/`` (where the next build would take it as committed)."""
        dest = self.layer_path(layer_id)
        size = None
        if not dest.exists():
            try:
                size = fsync_tree(upper)
            except OSError as e:
                raise _not_durable(layer_id, e) from None
            try:
                os.rename(upper, dest)
            except OSError:  # another build committed the same layer meanwhile
                if not dest.is_dir():
                    raise
                size = None
            else:
                try:
                    fsync_dir(self.layers_dir)
                except OSError as e:
                    os.rename(dest, upper)  # out again: its name in layers/ is not durable
                    raise _not_durable(layer_id, e) from None
        if upper.exists():
            safefs.rmtree(upper, ignore_errors=True)
        now = time.time()
        with self._db() as db:
            db.execute("INSERT INTO layers (id, size, created, last_used) VALUES (?,?,?,?) "
                       "ON CONFLICT(id) DO UPDATE SET last_used=excluded.last_used",
                       (layer_id, dir_size(dest) if size is None else size, now, now))
        return dest

    def record_layer_blob(self, layer_id: str, blob: str, media_type: str, size: int) -> None:
        """Remember that layer ``layer_id`` (a diff_id) is the extraction of compressed ``blob``."""
        now = time.time()
        with self._db() as db:
            db.execute("INSERT INTO layers (id, created, last_used, blob, media_type, blob_size) VALUES (?,?,?,?,?,?) "
                       "ON CONFLICT(id) DO UPDATE SET blob=excluded.blob, media_type=excluded.media_type, "
                       "blob_size=excluded.blob_size, last_used=excluded.last_used",
                       (layer_id, now, now, blob, media_type, size))

    def layer_times(self, layer_ids: list[str]) -> dict[str, int]:
        """When each layer was first committed to the store (ns since the epoch), for layers whose
        producing result has no recorded time (a cache written by an older irctl)."""
        out: dict[str, int] = {}
        with self._db() as db:
            for lid in dict.fromkeys(layer_ids):
                row = db.execute("SELECT created FROM layers WHERE id=?", (lid,)).fetchone()
                if row is not None:
                    out[lid] = int(row[0] * 1_000_000_000)
        return out

    def layer_blob(self, layer_id: str) -> tuple[str, str, int] | None:
        with self._db() as db:
            row = db.execute("SELECT blob, media_type, blob_size FROM layers WHERE id=?", (layer_id,)).fetchone()
        return tuple(row) if row and row[0] else None  # type: ignore[return-value]

    def _extractable(self, db: sqlite3.Connection, layer_id: str) -> bool:
        row = db.execute("SELECT blob FROM layers WHERE id=?", (layer_id,)).fetchone()
        return bool(row and row[0] and self.blobs.has(row[0]))

    def ensure_layer(self, layer_id: str, build: Callable[[Path], None]) -> Path:
        """The layer dir for ``layer_id``, made by ``build(tmp_dir)`` under a per-layer lock if missing."""
        dest = self.layer_path(layer_id)
        if dest.is_dir():
            return dest
        with self.locked(f"layer-{hexof(layer_id)[:32]}.lock"):
            if dest.is_dir():
                return dest
            work = Path(tempfile.mkdtemp(prefix=f"x-{hexof(layer_id)[:32]}-", dir=self.tmp_dir))
            try:
                build(work / "layer")
                return self.commit_layer(work / "layer", layer_id)
            finally:
                safefs.rmtree(work, ignore_errors=True)

    # -- cache mounts -------------------------------------------------------------------------
    def mount_name(self, cache_id: str) -> str:
        return hashlib.sha256(cache_id.encode()).hexdigest()[:32]

    def mount_dir(self, cache_id: str, create: Callable[[Path], None]) -> Path:
        """The persistent dir of cache mount ``cache_id``; ``create(tmp)`` populates it the first time."""
        dest = self.mounts_dir / self.mount_name(cache_id)
        if dest.is_dir():
            return dest
        with self.locked(f"mount-{self.mount_name(cache_id)}.create"):
            if not dest.is_dir():
                work = Path(tempfile.mkdtemp(prefix=f"m-{self.mount_name(cache_id)}-", dir=self.tmp_dir))
                try:
                    create(work / "dir")
                    os.rename(work / "dir", dest)
                finally:
                    safefs.rmtree(work, ignore_errors=True)
        return dest

    def mount_lock(self, cache_id: str, *, exclusive: bool, wait: bool = True) -> int | None:
        """Hold the lock of a cache mount; returns the fd to close, or None (``wait=False``, busy)."""
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            return self._lock(f"mount-{self.mount_name(cache_id)}.lock", mode, None if wait else 0)
        except BlockingIOError:
            return None

    # -- usage and pruning --------------------------------------------------------------------
    def du(self) -> Usage:
        with self._db() as db:
            n_results = db.execute("SELECT count(*) FROM results").fetchone()[0]
        layer_dirs = [p for p in self.layers_dir.iterdir() if p.is_dir()]
        mounts = [p for p in self.mounts_dir.iterdir() if p.is_dir()]
        blob_bytes = sum(p.stat().st_blocks * 512 for p in self.blobs.blob_dir.iterdir() if p.is_file())
        return Usage(n_results, len(layer_dirs), sum(dir_size(p) for p in layer_dirs), blob_bytes,
                     sum(dir_size(p) for p in mounts), len(mounts))

    def prune(self, keep_storage: int = 0, *, all: bool = False, timeout: float = 30.0,
              keep_images: tuple[str, ...] | None = None) -> int:
        """Delete least recently used results (and what only they use) until the store is at most
        ``keep_storage`` bytes; ``all`` deletes everything, cache mounts included.  Waits up to
        ``timeout`` seconds for running builds to end.  Returns the bytes freed.

        ``keep_images`` (with ``all``): manifest or index digests of pulled base images to keep —
        their manifests, config and layer blobs, and their extracted layers — while every build
        result goes, as ``docker builder prune -a`` keeps pulled images."""
        try:
            fd = self._lock("gc.lock", fcntl.LOCK_EX, timeout)
        except BlockingIOError:
            raise CacheError("the cache store is in use by a running build; try again when it ends") from None
        try:
            before = self.du().total
            self.clean_stale()
            kept_blobs, kept_layers = image_closure(self.blobs, keep_images or ()) if all else (set(), set())
            with self._db() as db:
                blobs_before = {r[0] for r in db.execute("SELECT blob FROM layers WHERE blob IS NOT NULL")}
                if all:
                    db.execute("DELETE FROM selections")
                    db.execute("DELETE FROM results")
                    for (lid,) in db.execute("SELECT id FROM layers").fetchall():
                        if lid not in kept_layers:
                            db.execute("DELETE FROM layers WHERE id=?", (lid,))
                else:
                    prune_lru(db, keep_storage, sum(dir_size(p) for p in self.mounts_dir.iterdir()))
                keep = {r[0] for r in db.execute("SELECT id FROM layers")}
                blobs_keep = {r[0] for r in db.execute("SELECT blob FROM layers WHERE blob IS NOT NULL")}
            for p in self.layers_dir.iterdir():
                if "sha256:" + p.name not in keep:
                    safefs.rmtree(p, ignore_errors=True)
            if all:
                for p in self.mounts_dir.iterdir():
                    safefs.rmtree(p, ignore_errors=True)
                for p in self.blobs.blob_dir.iterdir():
                    if "sha256:" + p.name not in kept_blobs:
                        p.unlink()
            else:
                for digest in blobs_before - blobs_keep:  # compressed layers only their layer row named
                    self.blobs.delete(digest)
            return max(0, before - self.du().total)
        finally:
            os.close(fd)

def _not_durable(layer_id: str, e: OSError) -> CacheError:
    where = f"{e.filename}: " if e.filename else ""
    return CacheError(f"cannot commit layer {layer_id}: writing it to disk failed: {where}{e.strerror or e}")
