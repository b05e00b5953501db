"""BlobStore: content addressing, verified ingest, the diff_id -> compressed mapping across processes."""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
from pathlib import Path

import pytest

from backend.store.blobs import BlobError, BlobStore, CompressedBlob, DigestMismatch


def _d(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_write_and_read(tmp_path: Path) -> None:
    s = BlobStore(tmp_path)
    d = s.write_bytes(b"hello")
    assert d == _d(b"hello") and s.has(d)
    assert s.path(d) == tmp_path / "blobs" / "sha256" / d[7:]
    assert s.read_bytes(d) == b"hello" and s.size(d) == 5
    with s.open(d) as f:
        assert f.read() == b"hello"
    assert s.write_bytes(b"hello") == d
    assert list(s) == [d]
    s.verify(d)


def test_ingest_verifies_and_never_stores_a_wrong_blob(tmp_path: Path) -> None:
    s = BlobStore(tmp_path)
    data = os.urandom(3 << 20)
    assert s.ingest(io.BytesIO(data), _d(data), len(data)) == _d(data)
    wrong = "sha256:" + "0" * 64
    with pytest.raises(DigestMismatch, match=f"expected {wrong}; not stored"):
        s.ingest(io.BytesIO(b"other"), wrong)
    assert not s.has(wrong) and not s.has(_d(b"other"))
    with pytest.raises(DigestMismatch, match="larger than its announced size 3"):
        s.ingest(io.BytesIO(b"other"), _d(b"other"), 3)
    with pytest.raises(DigestMismatch, match="expected 9"):
        s.ingest(io.BytesIO(b"other"), _d(b"other"), 9)
    assert os.listdir(tmp_path / "tmp") == []


def test_malformed_digest(tmp_path: Path) -> None:
    s = BlobStore(tmp_path)
    for bad in ("sha256:abc", "md5:" + "0" * 32, "sha256:../../etc/passwd", "SHA256:" + "0" * 64):
        with pytest.raises(BlobError, match="malformed digest"):
            s.path(bad)
    with pytest.raises(BlobError, match="not in store"):
        s.open("sha256:" + "1" * 64)


def test_verify_removes_corrupt_blob(tmp_path: Path) -> None:
    s = BlobStore(tmp_path)
    d = s.write_bytes(b"good")
    s.path(d).write_bytes(b"evil")
    with pytest.raises(DigestMismatch, match="removed it"):
        s.verify(d)
    assert not s.has(d)


def test_compressed_mapping_persists_and_checks_blob(tmp_path: Path) -> None:
    s = BlobStore(tmp_path)
    blob = s.write_bytes(b"compressed bytes")
    diff = "sha256:" + "a" * 64
    assert s.lookup_compressed(diff, "gzip") is None
    s.record_compressed(diff, "gzip", CompressedBlob(blob, 16, "application/vnd.oci.image.layer.v1.tar+gzip"))
    assert BlobStore(tmp_path).lookup_compressed(diff, "gzip") == CompressedBlob(
        blob, 16, "application/vnd.oci.image.layer.v1.tar+gzip")
    assert s.lookup_compressed(diff, "zstd") is None
    s.delete(blob)
    assert s.lookup_compressed(diff, "gzip") is None  # mapping to a vanished blob is no hit


def _worker(root: str, n: int, q: "multiprocessing.Queue[str]") -> None:
    try:
        s = BlobStore(root)
        for i in range(200):
            data = f"blob {i}".encode()
            d = s.write_bytes(data)
            s.record_compressed("sha256:" + hashlib.sha256(b"%d" % i).hexdigest(), "gzip",
                                CompressedBlob(d, len(data), "x/y"))
            assert s.lookup_compressed("sha256:" + hashlib.sha256(b"%d" % i).hexdigest(), "gzip") is not None
        q.put("ok")
    except Exception as e:  # pragma: no cover - reported to the parent
        q.put(repr(e))


def test_two_processes_share_the_store(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), n, q)) for n in range(2)]
    for p in procs:
        p.start()
    results = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    assert results == ["ok", "ok"]
    s = BlobStore(tmp_path)
    assert len(list(s)) == 200
    for d in s:
        s.verify(d)
