"""A tiny in-process gRPC server playing a REAPI server that misbehaves on purpose: each test gives
the handlers it needs (by RPC name), and everything else answers UNIMPLEMENTED."""

from __future__ import annotations

from concurrent import futures

import grpc
from google.protobuf import message_factory

from backend.reapi.address import parse_endpoint
from backend.reapi.client import Remote
from backend.reapi.protos import bots_pb2, bytestream_pb2, execution_service_pb2, remote_execution_pb2

_KINDS = {(False, False): grpc.unary_unary_rpc_method_handler, (False, True): grpc.unary_stream_rpc_method_handler,
          (True, False): grpc.stream_unary_rpc_method_handler}


def _methods() -> dict[str, tuple]:
    """RPC name -> (path, request class, response class, handler maker)."""
    out = {}
    for module in (remote_execution_pb2, execution_service_pb2, bytestream_pb2, bots_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for m in service.methods:
                out[m.name] = (f"/{service.full_name}/{m.name}", message_factory.GetMessageClass(m.input_type),
                               message_factory.GetMessageClass(m.output_type),
                               _KINDS[m.client_streaming, m.server_streaming])
    return out


METHODS = _methods()


def _serialize(message) -> bytes:
    """A handler may answer bytes: whatever a broken or hostile server might put on the wire."""
    return message if isinstance(message, bytes) else message.SerializeToString()


class FakeServer:
    def __init__(self, **handlers):
        self.handlers = dict(handlers)
        self.calls: list[str] = []
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        by_path = {path: (name, req, resp, kind) for name, (path, req, resp, kind) in METHODS.items()}
        fake = self

        class Handler(grpc.GenericRpcHandler):
            def service(self, details):
                if details.method not in by_path:
                    return None
                name, req, resp, kind = by_path[details.method]

                def call(request, context):
                    fake.calls.append(name)
                    if name not in fake.handlers:
                        context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not served here")
                    return fake.handlers[name](request, context)

                return kind(call, request_deserializer=req.FromString,
                            response_serializer=_serialize)

        self._server.add_generic_rpc_handlers([Handler()])
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.url = f"grpc://127.0.0.1:{self.port}"
        self._server.start()

    def remote(self, options: str = "", timeout: float = 5.0) -> Remote:
        return Remote(parse_endpoint(self.url + options, "--remote")[0], timeout=timeout)

    def stop(self) -> None:
        self._server.stop(0)
