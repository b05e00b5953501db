"""Crash recovery: what a killed build left in the store's ``tmp/``, removed by the next one.

A build's session (``CacheStore.session``) is the work dir ``tmp/s-X``, the lock file ``tmp/s-X.lock``
it holds while it lives, and the note ``tmp/s-X.state`` naming its runtime dir (on a tmpfs: secret
files, container bundles and container state).  Once that lock is free its owner is dead: the
containers it left running are killed by the runtime room's reaper (``reap_runtime_dir``, handed to
the store by whoever opens it: the store ranks beside the runtime and cannot import it), what is
still mounted below its work dir is unmounted, and both dirs go.  A layer extraction (``x-*``) or a
cache-mount creation (``m-*``) that died is named by its free lock; so is a blob write that died
(``ingest-*``, ``blob-*``: locked before it had that name, ``backend.store.blobs.locked_temp``), and
one that died before its temp file got that name (``.ingest-*``, ``.blob-*``) by its age."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path

from backend.fs import safefs
from backend.snapshot.mount import unmount_below

RuntimeReaper = Callable[[Path], object]  # kills and deletes the containers in a runtime dir, removes it
BLOB_WRITE_GRACE = 60  # seconds: a blob write's hidden temp file is locked and named right after it is made


def clean_stale(tmp_dir: Path, locks_dir: Path, reap_runtime_dir: RuntimeReaper | None) -> None:
    """Remove what sessions, extractions and blob writes that died left in ``tmp_dir``.  Without
    ``reap_runtime_dir`` a dead session's runtime dir is left, with its note, for a store that has one."""
    if reap_runtime_dir is not None:
        for note in tmp_dir.glob("s-*.state"):  # a session that ended but could not remove its runtime dir
            if not Path(str(note)[: -len(".state")] + ".lock").exists():
                _reap_runtime_dir(note, reap_runtime_dir)
    for lock in tmp_dir.glob("s-*.lock"):
        fd = _try_lock(lock, create=False)
        if fd is None:
            continue
        work = Path(str(lock)[: -len(".lock")])
        if reap_runtime_dir is not None:
            _reap_runtime_dir(Path(f"{work}.state"), reap_runtime_dir)
        unmount_below(work)
        safefs.rmtree(work, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)
    for work in [*tmp_dir.glob("x-*-*"), *tmp_dir.glob("m-*-*")]:
        kind, name = work.name.split("-")[:2]
        fd = _try_lock(locks_dir / (f"layer-{name}.lock" if kind == "x" else f"mount-{name}.create"), create=True)
        if fd is not None:
            safefs.rmtree(work, ignore_errors=True)
            os.close(fd)
    for tmp in [*tmp_dir.glob("ingest-*"), *tmp_dir.glob("blob-*"), *tmp_dir.glob(".ingest-*"),
                *tmp_dir.glob(".blob-*")]:
        with contextlib.suppress(OSError):
            if not tmp.name.startswith(".") or time.time() - tmp.stat().st_mtime > BLOB_WRITE_GRACE:
                fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    tmp.unlink()
                finally:
                    os.close(fd)


def end_session(work: Path) -> None:
    """What a session that ends (normally or by an exception) removes itself; its runtime dir's note
    stays when that dir could not be removed, for the next session to reap."""
    unmount_below(work)
    safefs.rmtree(work, ignore_errors=True)
    with contextlib.suppress(OSError):
        if not Path(Path(f"{work}.state").read_text().strip()).exists():
            os.unlink(f"{work}.state")


def _reap_runtime_dir(note: Path, reap: RuntimeReaper) -> None:
    """Hand the runtime dir named in ``note`` to ``reap``; a note naming anything but one of ours
    (an ``irctl-*`` dir) is dropped unread."""
    try:
        state = Path(note.read_text().strip())
        note.unlink()
    except OSError:
        return
    if state.name.startswith("irctl-") and state.is_dir() and not state.is_symlink():
        reap(state)


def _try_lock(path: Path, *, create: bool) -> int | None:
    """An exclusive lock on ``path`` if nobody holds it (the fd to close), else None."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0), 0o600)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
