"""Every message, enum and service of some protobuf files as plain JSON-able data, to compare ours
with another implementation's.  Run as a script in BuildGrid's venv it prints BuildGrid's (the REAPI,
ByteStream and Remote Workers files) as JSON; tests/reapi/test_protos.py imports ``dump`` for ours.
Needs nothing but ``google.protobuf``: it runs under both interpreters."""

from __future__ import annotations

import importlib
import json
import sys

BUILDGRID_MODULES = (
    "buildgrid._protos.build.bazel.remote.execution.v2.remote_execution_pb2",
    "buildgrid._protos.google.bytestream.bytestream_pb2",
    "buildgrid._protos.google.devtools.remoteworkers.v1test2.bots_pb2",
    "buildgrid._protos.google.devtools.remoteworkers.v1test2.worker_pb2",
)


def _repeated(field) -> bool:
    if hasattr(field, "is_repeated"):
        return bool(field.is_repeated)
    return field.label == field.LABEL_REPEATED


def _field(field) -> list:
    kind = field.message_type or field.enum_type
    return [field.number, field.type, _repeated(field), kind.full_name if kind else ""]


def _message(desc, out: dict) -> None:
    out["messages"][desc.full_name] = {f.name: _field(f) for f in desc.fields}
    for enum in desc.enum_types:
        out["enums"][enum.full_name] = {v.name: v.number for v in enum.values}
    for nested in desc.nested_types:
        if not nested.GetOptions().map_entry:
            _message(nested, out)


def dump(files) -> dict:
    """``{"messages": {name: {field: [number, type, repeated, type name]}}, "enums": {name: {value:
    number}}, "services": {name: {method: [input, output, client streams, server streams]}}}``."""
    out: dict = {"messages": {}, "enums": {}, "services": {}}
    for file in files:
        for desc in file.message_types_by_name.values():
            _message(desc, out)
        for enum in file.enum_types_by_name.values():
            out["enums"][enum.full_name] = {v.name: v.number for v in enum.values}
        for service in file.services_by_name.values():
            out["services"][service.full_name] = {
                m.name: [m.input_type.full_name, m.output_type.full_name, m.client_streaming, m.server_streaming]
                for m in service.methods}
    return out


if __name__ == "__main__":
    json.dump(dump(importlib.import_module(m).DESCRIPTOR for m in BUILDGRID_MODULES), sys.stdout)
