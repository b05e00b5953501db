"""Messages packed inside messages (``Any``): an Operation's metadata and response are parsed by the
client after gRPC handed the Operation over, so a malformed one must be refused there too — one
line naming the server, never protobuf's ``DecodeError`` (a traceback)."""

from __future__ import annotations

import pytest
from google.longrunning import operations_proto_pb2 as ops_pb2
from google.protobuf import any_pb2

from backend.reapi.client import RemoteError
from backend.reapi.digests import digest_of
from tests.reapi.fakeserver import FakeServer

PREFIX = "type.googleapis.com/build.bazel.remote.execution.v2."


@pytest.mark.parametrize("operation", [
    ops_pb2.Operation(name="op", metadata=any_pb2.Any(type_url=PREFIX + "ExecuteOperationMetadata", value=b"\xff\xff")),
    ops_pb2.Operation(name="op", done=True, response=any_pb2.Any(type_url=PREFIX + "ExecuteResponse", value=b"\x0a\xff")),
], ids=["metadata", "response"])
def test_a_malformed_message_inside_an_operation_is_one_line(operation):
    server = FakeServer(Execute=lambda request, context: iter([operation]))
    remote = server.remote(timeout=3)
    try:
        with pytest.raises(RemoteError, match=r"^REAPI server grpc://127\.0\.0\.1:\d+: Execute: the server sent a "
                                              r"malformed (ExecuteOperationMetadata|ExecuteResponse)$"):
            remote.execute(digest_of(b"action"))
    finally:
        remote.close()
        server.stop()
