"""The JSON form of IR values: the msgpack form with binary values as base64 strings.

This is what ``irctl dump --format json`` prints, what ``spec/ir.schema.json`` describes, and how
the spec's examples and conformance cases are written.  ``from_json`` is typed (it knows from
``ir/ops.py`` which fields are binary) and otherwise passes values through untouched, so the
strict decoder still sees — and rejects — every wrong shape, key order or default-valued field.
"""

from __future__ import annotations

import base64
import binascii
import json
import typing
from types import NoneType, UnionType
from typing import Any, Iterator

import msgpack

from ir import ops, wire
from ir.codec import check_compatible, decode_document
from ir.errors import DecodeError


def to_json(value: Any) -> Any:
    """JSON form of a typed IR object (or of a wire value)."""
    if isinstance(value, ops.Node):
        value = wire.encode(value)
    return _b64(value)


def _b64(value: Any) -> Any:
    if isinstance(value, dict):
        return {(k if isinstance(k, str) else repr(k)): _b64(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_b64(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def from_json(cls: type, value: Any, path: str = "") -> Any:
    """Wire value (as msgpack would decode it) of the JSON form ``value`` of a ``cls``."""
    return _convert(cls, value, path)


def _convert(tp: Any, v: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is UnionType or origin is typing.Union:
        (tp,) = [a for a in typing.get_args(tp) if a is not NoneType]
        origin = typing.get_origin(tp)
    if tp is bytes:
        if not isinstance(v, str):
            return v
        try:
            return base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            raise DecodeError("binary values are base64 strings in the JSON form", path) from None
    if ops.is_node(tp) and type(v) is dict:
        hints = {f.name: f.type for f in ops.field_specs(tp)}
        return {k: (_convert(hints[k], x, f"{path}.{k}" if path else k) if k in hints else x) for k, x in v.items()}
    if origin is tuple and type(v) is list:
        return [_convert(typing.get_args(tp)[0], x, f"{path}[{i}]") for i, x in enumerate(v)]
    if origin is dict and type(v) is dict:
        return {k: _convert(typing.get_args(tp)[1], x, f"{path}[{k}]") for k, x in v.items()}
    return v


def document_from_json(value: Any) -> ops.Document:
    """Typed document from its JSON form, with every check ``ir.codec.load_document`` makes."""
    if type(value) is not dict:
        raise DecodeError(f"document must be a map, got {wire.type_name(value)}")
    check_compatible(value)
    raw = from_json(ops.Document, value)
    return decode_document(raw, msgpack.packb(raw, use_bin_type=True))


def dumps(value: Any) -> str:
    return "".join(iter_dumps(value))


def iter_dumps(value: Any) -> Iterator[str]:
    """The JSON text of a typed IR object or a wire value, in pieces: a caller that writes them as
    they come never holds the whole text (indented JSON is several times the document's size), and
    binary values are base64'd while writing, not in a second copy of the document."""
    encoder = json.JSONEncoder(indent=2, ensure_ascii=False, default=_bytes_b64)
    return encoder.iterencode(wire.encode(value) if isinstance(value, ops.Node) else to_json(value))


def _bytes_b64(value: Any) -> str:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} is not part of the JSON form")
