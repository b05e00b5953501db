"""Canonical msgpack bytes, op digests, and the IR file framing.

msgpack has no canonical form of its own, so the spec defines one (``spec/ir.md`` § Canonical
encoding) and this module produces exactly those bytes: map keys sorted by their UTF-8 bytes,
integers in their shortest form, strings as str and binary as bin, no floats, no nil, and every
field equal to its default omitted.  The digests of ops are computed over those bytes, so any
writer in any language that follows the rules produces the same digests.

Encoding and the normal load are msgspec's, in C, on the ``ir.ops`` structs: a file is accepted
only when msgspec decodes it *and* re-encoding the result gives back the very same bytes, which
rules out every non-canonical form at once (key order, integer widths, defaults present, nil…).
A file that fails either test goes through the strict reference decoder (``ir.wire``) to say
exactly what is wrong and where.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import operator
import struct
from typing import Any, Iterator

import msgpack
import msgspec

from ir import features as feature_set
from ir import limits, ops
from ir.errors import DecodeError, VersionError, key
from ir.wire import decode, encode, type_name

MAGIC = b"\x89IRG\r\n\x1a\n"
VERSION = 1
COMPRESSION_NONE = 0
COMPRESSION_ZSTD = 1
HEADER = struct.Struct(">8sHBB")  # magic, major version, compression, reserved (0)
MEDIA_TYPE = "application/vnd.irctl.graph.v1+msgpack"
MEDIA_TYPE_ZSTD = "application/vnd.irctl.graph.v1+msgpack+zstd"
MEDIA_TYPE_JSON = "application/vnd.irctl.graph.v1+json"  # the JSON form (``ir.jsonform``)
MAX_PAYLOAD = limits.MAX_PAYLOAD  # a decompressed document larger than 1 GiB is refused


def canonical_bytes(obj: Any) -> bytes:
    """The canonical encoding of a typed IR object (an ``Op``, a ``Document``, …)."""
    return msgpack.packb(encode(obj), use_bin_type=True)


def digest_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def op_bytes(op: ops.Op) -> bytes:
    """Canonical bytes of an op, computed once per op object."""
    cached = op.__dict__.get("_canonical")
    if cached is None:
        cached = canonical_bytes(op)
        op.__dict__["_canonical"] = cached
    return cached


def op_digest(op: ops.Op) -> str:
    """`sha256:` over the op's canonical bytes — its inputs' digests included, so a Merkle DAG."""
    cached = op.__dict__.get("_digest")
    if cached is None:
        cached = digest_bytes(op_bytes(op))
        op.__dict__["_digest"] = cached
    return cached


def document_bytes(doc: ops.Document) -> bytes:
    """Canonical msgpack of a whole document: each op's canonical bytes (cached by the builder or
    the loader) spliced in as ``msgspec.Raw``, the rest encoded by msgspec.  msgspec's omission of
    defaults by identity is exact there: the classes outside the ops (``Ref``, ``OpMetadata``,
    ``Location``, ``SourceFile``) only have defaults that are shared objects (``0``, ``""``, ``()``,
    ``b""``), which every equal value is."""
    raw_ops = {digest: msgspec.Raw(op.__dict__.get("_canonical") or op_bytes(op)) for digest, op in doc.ops.items()}
    return _REENCODE(ops.replace(doc, ops=raw_ops))


# --------------------------------------------------------------------------- files


def dump_document(doc: ops.Document, *, compress: bool = True, level: int = 3) -> bytes:
    """Serialise a document: header, then (zstd-compressed) canonical msgpack."""
    with gc_paused():
        payload = document_bytes(doc)
    if compress:
        import zstandard

        payload = zstandard.ZstdCompressor(level=level).compress(payload)
    header = HEADER.pack(MAGIC, VERSION, COMPRESSION_ZSTD if compress else COMPRESSION_NONE, 0)
    return header + payload


def load_raw(data: bytes) -> dict:
    """Check the header and return the decoded msgpack map, not yet typed or validated."""
    return load_payload(data)[1]


def load_payload(data: bytes) -> tuple[bytes, dict]:
    """Check the header; return the (decompressed) msgpack payload and its decoded map."""
    payload = unframe(data)
    try:
        raw = msgpack.unpackb(payload, raw=False, strict_map_key=False, use_list=True)
    except msgpack.ExtraData:
        raise DecodeError("trailing bytes after the msgpack document") from None
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        # TypeError: a map key that is itself a map or an array ("unhashable type").
        raise DecodeError(f"payload is not valid msgpack: {str(e) or type(e).__name__}") from None
    if type(raw) is not dict:
        raise DecodeError(f"document must be a map, got {type_name(raw)}")
    return payload, raw


def unframe(data: bytes) -> bytes:
    """Check the header; return the (decompressed) msgpack payload."""
    if len(data) < HEADER.size:
        if MAGIC.startswith(data[: len(MAGIC)]) and data:
            raise DecodeError(f"truncated header: {len(data)} of {HEADER.size} bytes")
        raise DecodeError("not an irctl IR file (too short, no magic header)")
    magic, version, compression, reserved = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise DecodeError(f"not an irctl IR file: bad magic {magic!r}")
    if version != VERSION:
        raise VersionError(
            f"IR major version {version} is not supported by this irctl (reads version {VERSION}); "
            + ("upgrade irctl" if version > VERSION else "re-generate the graph"))
    if reserved != 0:
        raise DecodeError(f"header reserved byte must be 0, got {reserved}")
    payload = memoryview(data)[HEADER.size:]
    if compression == COMPRESSION_ZSTD:
        payload = _decompress(payload)
    elif compression != COMPRESSION_NONE:
        raise DecodeError(f"unknown compression {compression} in header (0 none, 1 zstd)")
    elif len(payload) > MAX_PAYLOAD:
        raise DecodeError(f"payload of {len(payload)} bytes exceeds the limit of {MAX_PAYLOAD}")
    cost, allowed = limits.estimate(payload), limits.budget(len(data))
    if cost > allowed:
        raise DecodeError(f"decoding this payload could take up to {cost >> 20} MiB, over the limit of "
                          f"{allowed >> 20} MiB for a file of {len(data)} bytes (too many small values)")
    return bytes(payload)


def _decompress(payload: memoryview) -> bytes:
    """Exactly one zstd frame that declares its content size, at most ``MAX_PAYLOAD`` bytes and
    ``limits.MAX_RATIO`` times the frame's size: the declared size is checked before any byte
    is decompressed, and decompression never goes past it."""
    import zstandard

    try:
        size = zstandard.frame_content_size(payload)
    except zstandard.ZstdError as e:
        raise DecodeError(f"corrupt zstd payload: {e}") from None
    if size < 0:
        raise DecodeError("zstd frame does not declare its content size")
    if size > MAX_PAYLOAD:
        raise DecodeError(f"zstd frame declares {size} bytes, over the limit of {MAX_PAYLOAD}")
    allowed = limits.allowed_payload(len(payload))
    if size > allowed:
        raise DecodeError(f"zstd frame declares {size} bytes from {len(payload)} compressed, over the limit of "
                          f"{allowed} ({limits.MAX_RATIO} times the compressed size, at least "
                          f"{limits.MIN_PAYLOAD_ALLOWANCE})")
    dobj = zstandard.ZstdDecompressor().decompressobj()
    try:
        out = dobj.decompress(payload)
    except zstandard.ZstdError as e:
        raise DecodeError(f"corrupt zstd payload: {e}") from None
    if not dobj.eof:
        raise DecodeError("truncated zstd payload")
    if dobj.unused_data:
        raise DecodeError(f"{len(dobj.unused_data)} trailing bytes after the zstd frame")
    if len(out) != size:
        raise DecodeError(f"zstd frame declares {size} bytes but holds {len(out)}")
    return out


def check_compatible(raw: dict) -> None:
    """Fail with a named version or feature before looking at anything else."""
    version = raw.get("version")
    if version != VERSION:
        if type(version) is int:
            raise VersionError(f"document version {version} is not supported (this irctl reads {VERSION})", "version")
        raise DecodeError(f"missing or invalid version (expected the integer {VERSION})", "version")
    features = raw.get("features", [])
    if type(features) is list:
        for i, name in enumerate(features):
            if isinstance(name, str) and name not in feature_set.KNOWN:
                raise VersionError(f"unknown feature {name!r}: the graph needs a newer irctl", f"features[{i}]")


def decode_document(raw: dict, payload: bytes | None = None) -> ops.Document:
    """Typed document from a raw map; checks version, features, shapes and every op digest.

    With ``payload`` (the msgpack bytes ``raw`` was read from), also checks that the payload is
    byte for byte the canonical encoding, so a document has exactly one valid byte form.
    """
    check_compatible(raw)
    doc = decode(ops.Document, raw)
    raw_ops = raw["ops"]
    pack = msgpack.Packer(use_bin_type=True).pack
    sha256 = hashlib.sha256
    op_data = {}
    for digest in raw_ops:
        # Decoding enforced canonical structure, so re-packing the raw map yields canonical bytes.
        op_data[digest] = pack(raw_ops[digest])
    if payload is not None:
        _check_canonical(raw, op_data, payload)
    for digest, op in doc.ops.items():
        data = op_data[digest]
        if "sha256:" + sha256(data).hexdigest() != digest:
            raise DecodeError(f"op is stored under a digest that does not match its content: stored {digest}, "
                              f"content {digest_bytes(data)}",
                              key("ops", digest))
        op.__dict__["_canonical"] = data
        op.__dict__["_digest"] = digest
    return doc


def _check_canonical(raw: dict, op_data: dict[str, bytes], payload: bytes) -> None:
    """Compare the payload with the canonical re-encoding of the raw map (reusing each op's
    re-packed bytes); on a difference, name the first place (an integer or string not in its
    shortest form, a wider map header, a duplicated key, …)."""
    packer = msgpack.Packer(use_bin_type=True)
    pack = packer.pack
    parts: list[bytes] = [packer.pack_map_header(len(raw))]
    marks: list[tuple[int, str]] = []  # (index in parts where a value starts, its key path)
    for k, v in raw.items():
        parts.append(pack(k))
        marks.append((len(parts), k))
        if k == "ops":
            parts.append(packer.pack_map_header(len(v)))
            for digest, data in op_data.items():
                parts.append(pack(digest))
                marks.append((len(parts), digest))
                parts.append(data)
        else:
            parts.append(pack(v))
    canonical = b"".join(parts)
    if canonical == payload:
        return
    at = next((i for i, (a, b) in enumerate(zip(canonical, payload)) if a != b), min(len(canonical), len(payload)))
    path, offset, mark = "", 0, 0
    for i, part in enumerate(parts):
        if offset + len(part) > at:
            break
        offset += len(part)
        while mark < len(marks) and marks[mark][0] <= i + 1:
            name = marks[mark][1]
            path = key("ops", name) if name.startswith("sha256:") else name
            mark += 1
    raise DecodeError(f"not in canonical encoding: first difference at byte {at} of the msgpack payload "
                      "(integers and strings use their shortest form, maps and arrays their smallest header)",
                      path)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: decoding and checking a big graph allocate many small
    objects that never form cycles, and each full collection would walk all of them (for a
    100,000-op graph that roughly halves the time)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_document(data: bytes) -> ops.Document:
    """Bytes of an IR file → typed document (structure checked; see ``ir.validate`` for the rest)."""
    with gc_paused():
        try:
            doc = _load_canonical(unframe(data))
        except RecursionError:
            raise DecodeError("document nests too deeply") from None
    return doc if doc is not None else load_document_strict(data)  # refused: say why


def load_document_strict(data: bytes) -> ops.Document:
    """``load_document`` through the strict reference decoder only (``ir.wire``): slower, and the
    one that names what is wrong; tests check that both accept exactly the same files."""
    with gc_paused():
        try:
            payload, raw = load_payload(data)
            return decode_document(raw, payload)
        except RecursionError:
            raise DecodeError("document nests too deeply") from None


# msgspec, in C: struct fields and map keys sorted; a field left out when it *is* its default object
# (identity, not equality — fine for decoded structs, see ``ops.Node``, but not for built ones,
# which ``canonical_bytes`` encodes).
_REENCODE = msgspec.msgpack.Encoder(order="sorted").encode


@functools.cache
def _document_decoder() -> msgspec.msgpack.Decoder:
    """Made on first use: building it resolves every class's annotations (~17 ms), which a build
    that hands its graph to the solver in memory never needs."""
    return msgspec.msgpack.Decoder(ops.Document)


def _load_canonical(payload: bytes) -> ops.Document | None:
    """The document if ``payload`` is a canonical, digest-true encoding of one, else ``None``.

    msgspec checks types, required fields and unknown keys while decoding; equality with the
    re-encoded document checks everything canonical (no field at its default, sorted keys and
    sets, shortest integers and headers, no nil); what is left are the tagged unions and the
    digests, checked here per op.
    """
    try:
        doc = _document_decoder().decode(payload)
    except (msgspec.DecodeError, ValueError, TypeError):
        return None
    if doc.version != VERSION or not feature_set.KNOWN.issuperset(doc.features):
        return None
    encode_op, sha256 = _REENCODE, hashlib.sha256
    for digest, op in doc.ops.items():
        if not _one_kind(op):
            return None
        data = encode_op(op)
        if "sha256:" + sha256(data).hexdigest() != digest:
            return None
        d = op.__dict__
        d["_canonical"] = data
        d["_digest"] = digest
    if _REENCODE(doc) != payload:
        return None
    return doc


def _members(cls: type) -> tuple[operator.attrgetter, int]:
    """A getter of a tagged union's members (``ops.ONE_OF``) and how many must be None."""
    names = [f.name for f in ops.field_specs(cls) if f.name != "inputs"]
    return operator.attrgetter(*names), len(names) - 1


_OP_MEMBERS, _SOURCE_MEMBERS, _ACTION_MEMBERS = (_members(c) for c in (ops.Op, ops.SourceOp, ops.FileAction))


def _one_kind(op: ops.Op) -> bool:
    """Exactly one member set in each tagged union of ``op`` (``ops.ONE_OF``); the getters fetch
    all members in one C call."""
    get, unset = _OP_MEMBERS
    if get(op).count(None) != unset:
        return False
    if op.source is not None:
        get, unset = _SOURCE_MEMBERS
        return get(op.source).count(None) == unset
    if op.file is not None:
        get, unset = _ACTION_MEMBERS
        return all(get(a).count(None) == unset for a in op.file.actions)
    return True
