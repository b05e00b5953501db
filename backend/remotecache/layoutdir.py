"""A shared cache in an OCI layout directory (``--cache-to type=local,dest=DIR``), written so that a
concurrent writer, a reader and whoever else can write the directory cannot make it invalid or
send a write elsewhere: the layout is locked (``.irctl-cache.lock``); every blob is written under a
fresh name and renamed in whole through a descriptor of the real ``blobs/sha256``, opened under the
lock without following links; ``index.json`` is replaced in one rename, keeping other tags'
entries; and only blobs neither this index nor the one before it names are removed, so a reader
that has just read the old index still finds its blobs.  An ``index.json`` that is not an index of
descriptors is refused rather than written over: the directory may hold more than caches.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from backend.export.reuse import replacing
from backend.oci.layout import ANNOT_REF_NAME, LAYOUT_VERSION, MT_OCI_INDEX, descriptor
from backend.oci.pull import Origin
from backend.remotecache.export import CacheExportError, blobs_of
from backend.remotecache.options import CacheExport
from backend.store.blobs import BlobStore, sha256_digest


def write_dir(spec: CacheExport, manifest: bytes, media_type: str, store: BlobStore,
              elsewhere: dict[str, Origin], fetch: Callable[[str, int, Origin], None]) -> tuple[int, int]:
    """Write the cache into the OCI layout at ``spec.path`` under ``spec.tag``, under the layout's
    lock (see the module's docstring).  Returns (blobs written, bytes written)."""
    dest = Path(spec.path)
    dest.mkdir(parents=True, exist_ok=True)
    written = n_bytes = 0
    with _locked(dest):
        old = _read_index(dest)
        blob_dir = _blob_dir(dest)
        try:
            for digest, size in [*blobs_of(manifest), (sha256_digest(manifest), len(manifest))]:
                name = digest.split(":", 1)[1]
                if _present(blob_dir, name, size):
                    continue
                if not store.has(digest):
                    fetch(digest, size, elsewhere[digest])
                with store.open(digest) as r:
                    _write_blob(blob_dir, name, r)
                written += 1
                n_bytes += size
            entry = descriptor(media_type, manifest, annotations={ANNOT_REF_NAME: spec.tag})
            keep = [d for d in old if d.get("annotations", {}).get(ANNOT_REF_NAME) != spec.tag]
            index = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": [*keep, entry]}
            with replacing(dest / "oci-layout", 0o644) as f:
                f.write(LAYOUT_VERSION)
            with replacing(dest / "index.json", 0o644) as f:
                f.write(json.dumps(index, separators=(",", ":")).encode())
            _prune(blob_dir, [*index["manifests"], *old])
        finally:
            os.close(blob_dir)
    return written, n_bytes


def _blob_dir(dest: Path) -> int:
    """``blobs/sha256`` of the layout at ``dest`` (made if missing), opened without following a link.
    Every blob is written, checked and removed through it: a name swapped for a symlink meanwhile (by
    anyone who can write the layout, lock or not) cannot send a write or a removal elsewhere."""
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in ("blobs", "sha256"):
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=fd)
            try:
                sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError:
                raise CacheExportError(f"{dest}: its {name} is not a directory (a symbolic link?); "
                                       "refusing to write through it") from None
            os.close(fd)
            fd = sub
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_blob(blob_dir: int, name: str, src) -> None:
    """``src`` as the blob ``name``: written under a fresh name, then renamed in whole."""
    tmp = f".{name}.{secrets.token_hex(8)}.partial"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644, dir_fd=blob_dir)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as w:
            shutil.copyfileobj(src, w, 1 << 20)
        os.rename(tmp, name, src_dir_fd=blob_dir, dst_dir_fd=blob_dir)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=blob_dir)
        raise


@contextlib.contextmanager
def _locked(dest: Path):
    fd = os.open(dest / ".irctl-cache.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _present(blob_dir: int, name: str, size: int) -> bool:
    """A blob already written (renamed in whole, so a regular file of the right size is complete;
    a reader checks its digest anyway)."""
    try:
        st = os.stat(name, dir_fd=blob_dir, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == size


def _read_index(dest: Path) -> list[dict]:
    """The descriptors of the layout's current index ([] when there is none).  One that is not an
    index of descriptors is refused rather than overwritten: the directory may hold more than caches."""
    try:
        with open(os.open(dest / "index.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # a FIFO would block the export, a device never end
                raise CacheExportError(f"{dest / 'index.json'} is not a regular file; not writing a cache over it")
            data = f.read(4 << 20)
    except FileNotFoundError:
        return []
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        body = None
    entries = body.get("manifests", []) if isinstance(body, dict) else None
    if not isinstance(entries, list) or not all(
            isinstance(d, dict) and isinstance(d.get("digest"), str) and isinstance(d.get("annotations", {}), dict)
            for d in entries):
        raise CacheExportError(f"{dest / 'index.json'} is not an OCI image index; not writing a cache over it")
    return entries


def _prune(blob_dir: int, manifests: list[dict]) -> None:
    """Remove the blobs no listed manifest reaches (manifests of other tags are read from the dir)."""
    keep: set[str] = set()
    for d in manifests:
        keep.add(d["digest"])
        try:
            name = d["digest"].removeprefix("sha256:")
            if not re.fullmatch(r"[0-9a-f]{64}", name):
                return  # not a blob of this layout: keep everything rather than guess
            with open(os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=blob_dir),
                      "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # a FIFO would block us, lock held
                    return
                body = json.loads(f.read(4 << 20))
            if "manifests" in body:  # an image index (another tag's multi-platform image): not followed
                return  # keep everything rather than guess
            for x in [body.get("config", {}), *body.get("layers", [])]:
                if isinstance(x, dict) and isinstance(x.get("digest"), str):
                    keep.add(x["digest"])
        except (OSError, ValueError, AttributeError, TypeError, RecursionError):
            return  # a manifest we cannot read: keep everything rather than guess
    for name in os.listdir(blob_dir):
        if "sha256:" + name not in keep and not name.startswith("."):
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=blob_dir)
