"""The JSON Schema of an IR document, derived from ``ir/ops.py``.

``spec/ir.schema.json`` is this function's output, committed so that other languages can use it;
``tests/ir/test_spec.py`` fails when the two drift.  The schema describes the *JSON form* of a
document (what ``irctl dump --format json`` prints): identical to the msgpack form except that
binary values are base64 strings.  Regenerate with ``python -m ir.schema > spec/ir.schema.json``.
"""

from __future__ import annotations

import base64
import json
import typing
from types import NoneType, UnionType
from typing import Any, Literal

from ir import ops

SCHEMA_ID = "https://irctl.dev/spec/ir/v1/schema.json"
DIGEST_PATTERN = "^sha256:[0-9a-f]{64}$"
OPTIONAL_DIGEST_PATTERN = "^(sha256:[0-9a-f]{64})?$"
ENV_PATTERN = "^[^=]+="


def _type_schema(tp: Any, defs: dict) -> dict:
    origin = typing.get_origin(tp)
    if tp is str:
        return {"type": "string"}
    if tp is bytes:
        return {"type": "string", "contentEncoding": "base64"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if origin is Literal:
        return {"enum": list(typing.get_args(tp))}
    if origin is tuple:
        return {"type": "array", "items": _type_schema(typing.get_args(tp)[0], defs)}
    if origin is dict:
        return {"type": "object", "additionalProperties": _type_schema(typing.get_args(tp)[1], defs)}
    if origin is UnionType or origin is typing.Union:
        (inner,) = [a for a in typing.get_args(tp) if a is not NoneType]
        return _type_schema(inner, defs)
    if ops.is_node(tp):
        _class_schema(tp, defs)
        return {"$ref": f"#/$defs/{tp.__name__}"}
    raise TypeError(tp)


def _class_schema(cls: type, defs: dict) -> None:
    if cls.__name__ in defs:
        return
    defs[cls.__name__] = {}  # reserve: classes may refer to themselves indirectly
    props: dict[str, Any] = {}
    required = []
    for f in ops.field_specs(cls):
        s = dict(_type_schema(f.type, defs))
        if f.doc:
            s["description"] = f.doc
        if f.sorted:
            s["uniqueItems"] = True
        if f.required:
            required.append(f.name)
        elif f.default is not None and not isinstance(f.default, (ops.Node, dict)):
            s["default"] = (list(f.default) if isinstance(f.default, tuple)
                            else base64.b64encode(f.default).decode() if isinstance(f.default, bytes) else f.default)
        props[f.name] = s
    out: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": props}
    if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):
        out["description"] = " ".join(cls.__doc__.split())
    if required:
        out["required"] = required
    if cls in ops.ONE_OF:
        members = [n for n in props if n != "inputs"]
        out["oneOf"] = [{"required": [m]} for m in members]
        out["maxProperties"] = 2 if "inputs" in props else 1
    defs[cls.__name__] = out


def document_schema() -> dict:
    defs: dict[str, Any] = {}
    _class_schema(ops.Document, defs)
    defs["Ref"]["properties"]["op"]["pattern"] = DIGEST_PATTERN
    defs["Document"]["properties"]["ops"]["propertyNames"] = {"pattern": DIGEST_PATTERN}
    defs["Document"]["properties"]["metadata"]["propertyNames"] = {"pattern": DIGEST_PATTERN}
    defs["Document"]["properties"]["version"]["const"] = 1
    defs["Document"]["properties"]["roots"]["minProperties"] = 1
    # The graph rules that a schema can state (``ir.validate.check_graph`` has them all).
    for cls, name in (("ImageSource", "digest"), ("OCILayoutSource", "digest"), ("HTTPSource", "checksum")):
        defs[cls]["properties"][name]["pattern"] = OPTIONAL_DIGEST_PATTERN
    for cls, name in (("ExecOp", "args"), ("ExecOp", "mounts"), ("FileOp", "actions")):
        defs[cls]["properties"][name]["minItems"] = 1
    for cls in ("ExecOp", "ImageConfig"):
        defs[cls]["properties"]["env"]["items"]["pattern"] = ENV_PATTERN
    defs["ExecOp"]["properties"]["cwd"]["pattern"] = "^/"
    defs["Mount"]["properties"]["target"]["pattern"] = "^/"
    defs["HTTPSource"]["properties"]["url"]["pattern"] = "^https?://"
    root = dict(defs.pop("Document"))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "irctl IR v1 document (JSON form)",
        **root,
        "$defs": dict(sorted(defs.items())),
    }


def schema_json() -> str:
    return json.dumps(document_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(schema_json(), end="")
