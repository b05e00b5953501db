"""Regenerates the ``*_pb2.py`` modules beside this file from its ``.proto`` files (grpcio-tools).

``python -m backend.reapi.protos.generate`` after editing a ``.proto``; tests/reapi/test_protos.py
regenerates into a temporary directory and fails when the committed modules differ.  The imported
googleapis files (``google/rpc/status.proto``, ``google/longrunning/operations.proto``) are given to
protoc as the descriptors the installed ``googleapis-common-protos`` registers, so the generated code
imports exactly the modules that define them at run time.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]  # the repository: the .proto files are named from here (backend/reapi/protos/…)
PROTOS = ("remote_execution.proto", "execution_service.proto", "bytestream.proto", "bots.proto")


def _googleapis_descriptor_set() -> bytes:
    """The FileDescriptorSet of the googleapis files ours import, with everything they import."""
    # lazy: generating is a developer's task; these load googleapis' and protoc's modules
    from google.longrunning import operations_proto_pb2
    from google.protobuf import descriptor_pb2
    from google.rpc import status_pb2

    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    def add(desc) -> None:
        if desc.name in files:
            return
        for dep in desc.dependencies:
            add(dep)
        files[desc.name] = descriptor_pb2.FileDescriptorProto()
        desc.CopyToProto(files[desc.name])

    add(status_pb2.DESCRIPTOR)
    add(operations_proto_pb2.DESCRIPTOR)
    return descriptor_pb2.FileDescriptorSet(file=list(files.values())).SerializeToString()


def generate(out: Path) -> list[Path]:
    """Writes ``out/backend/reapi/protos/<name>_pb2.py`` for every proto; returns their paths."""
    import tempfile  # lazy: see _googleapis_descriptor_set

    import grpc_tools  # lazy: grpcio-tools is a test dependency, not a runtime one
    from grpc_tools import protoc  # lazy: as grpc_tools

    wkt = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/*.proto
    with tempfile.TemporaryDirectory() as tmp:
        deps = Path(tmp) / "googleapis.pb"
        deps.write_bytes(_googleapis_descriptor_set())
        args = ["protoc", f"--descriptor_set_in={deps}", f"-I{ROOT}", f"-I{wkt}", f"--python_out={out}",
                *(f"{ROOT}/backend/reapi/protos/{name}" for name in PROTOS)]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed (its message is above)")
    return [out / "backend/reapi/protos" / name.replace(".proto", "_pb2.py") for name in PROTOS]


if __name__ == "__main__":
    for path in generate(ROOT):
        print(path.relative_to(ROOT), file=sys.stderr)
