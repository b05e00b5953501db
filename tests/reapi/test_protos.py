"""The committed protobuf modules are what the committed ``.proto`` files generate, and every message,
field, enum value and RPC they declare is REAPI's / ByteStream's / the Remote Workers API's exactly
(number, type, repetition), as BuildGrid, a real server, declares them."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from backend.reapi.protos import bots_pb2, bytestream_pb2, execution_service_pb2, remote_execution_pb2
from tests.reapi.descriptor_dump import dump

HERE = Path(__file__).resolve().parent
PROTOS = HERE.parents[1] / "backend/reapi/protos"
BUILDGRID = Path(os.environ.get("IRCTL_BUILDGRID", "/opt/irctl-buildgrid"))
OURS = (remote_execution_pb2, execution_service_pb2, bytestream_pb2, bots_pb2)


def _versionless(text: str) -> str:
    """A generated module without the protoc version it names (a newer grpcio-tools is not a change)."""
    text = re.sub(r"# Protobuf Python Version: .*", "", text)
    return re.sub(r"ValidateProtobufRuntimeVersion\([^)]*\)", "", text)


def test_the_committed_modules_are_what_the_protos_generate(tmp_path):
    pytest.importorskip("grpc_tools")
    from backend.reapi.protos.generate import generate

    made = generate(tmp_path)
    assert len(made) == len(OURS)
    for path in made:
        committed = PROTOS / path.name
        assert _versionless(path.read_text()) == _versionless(committed.read_text()), (
            f"{committed.name} is stale: run python -m backend.reapi.protos.generate")


def test_the_generated_modules_are_the_ones_imported():
    """Each module registered its own .proto (a renamed file would leave a stale module behind)."""
    names = sorted(m.DESCRIPTOR.name for m in OURS)
    assert names == sorted(f"backend/reapi/protos/{p.name}" for p in PROTOS.glob("*.proto"))


def test_the_messages_load_without_grpc():
    """What digests and results need loads without grpc (the client alone imports it)."""
    code = ("import sys; import backend.reapi.digests, backend.reapi.protos.bots_pb2, "
            "backend.reapi.protos.bytestream_pb2, backend.reapi.address; print('grpc' in sys.modules)")
    out = subprocess.run([os.sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=HERE.parents[1], env={**os.environ, "PYTHONPATH": str(HERE.parents[1])})
    assert out.stdout.strip() == "False"


def _buildgrid() -> dict:
    python = BUILDGRID / "bin/python"
    if not python.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"BuildGrid's venv is missing at {BUILDGRID} (IRCTL_BUILDGRID)")
        pytest.skip(f"BuildGrid's venv is missing at {BUILDGRID} (IRCTL_BUILDGRID)")
    out = subprocess.run([str(python), str(HERE / "descriptor_dump.py")], capture_output=True, text=True,
                         check=True, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    return json.loads(out.stdout)


def test_every_declaration_is_the_same_as_buildgrids():
    theirs, ours = _buildgrid(), dump(m.DESCRIPTOR for m in OURS)
    problems = []
    for kind in ("messages", "enums", "services"):
        for name, members in ours[kind].items():
            if name not in theirs[kind]:
                problems.append(f"{kind[:-1]} {name}: BuildGrid has none")
                continue
            for member, shape in members.items():
                other = theirs[kind][name].get(member)
                if other != shape:
                    problems.append(f"{name}.{member}: ours {shape}, BuildGrid's {other}")
    assert not problems, "\n".join(problems)
    # the comparison saw what matters: a field of each file, an enum and a streaming RPC
    assert ours["messages"]["build.bazel.remote.execution.v2.Digest"]["size_bytes"][0] == 2
    assert ours["messages"]["google.bytestream.ReadResponse"]["data"][0] == 10
    assert ours["enums"]["google.devtools.remoteworkers.v1test2.LeaseState"]["COMPLETED"] == 4
    assert ours["services"]["build.bazel.remote.execution.v2.Execution"]["Execute"][3] is True
