"""Recompute the digest test vectors in ``spec/vectors/`` from their JSON input alone."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import msgpack
import pytest

from ir import codec, jsonform, ops, validate, wire

VECTORS = Path(__file__).resolve().parents[2] / "spec" / "vectors"
OP_VECTORS = json.loads((VECTORS / "ops.json").read_text(encoding="utf-8"))
DOC_VECTORS = json.loads((VECTORS / "documents.json").read_text(encoding="utf-8"))


def test_vectors_cover_every_op_kind() -> None:
    kinds = {next(k for k in v["op"] if k != "inputs") for v in OP_VECTORS}
    assert kinds == set(ops.OP_KINDS)


@pytest.mark.parametrize("vector", OP_VECTORS, ids=[v["name"] for v in OP_VECTORS])
def test_op_vector(vector: dict) -> None:
    raw = jsonform.from_json(ops.Op, vector["op"])
    # A generic msgpack packer fed the JSON form in its (canonical) key order gives the bytes ...
    data = msgpack.packb(raw, use_bin_type=True)
    assert data.hex() == vector["canonical_hex"]
    # ... whose SHA-256 is the digest ...
    assert "sha256:" + hashlib.sha256(data).hexdigest() == vector["digest"]
    # ... and the typed codec agrees both ways.
    op = wire.decode(ops.Op, raw)
    assert codec.canonical_bytes(op).hex() == vector["canonical_hex"]
    assert codec.op_digest(op) == vector["digest"]


@pytest.mark.parametrize("vector", DOC_VECTORS, ids=[v["name"] for v in DOC_VECTORS])
def test_document_vector(vector: dict) -> None:
    doc = jsonform.document_from_json(vector["document"])
    assert codec.dump_document(doc, compress=False).hex() == vector["file_hex"]
    assert validate.load_and_validate(bytes.fromhex(vector["file_hex"])) == doc


def test_regenerating_vectors_changes_nothing() -> None:
    """The generator (builder → vectors) and the stored vectors agree: digests are stable."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_vectors", VECTORS / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert [(n, codec.op_digest(op)) for n, op in gen.op_vectors()] == [(v["name"], v["digest"]) for v in OP_VECTORS]
