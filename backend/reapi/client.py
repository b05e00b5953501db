"""A REAPI v2 server as irctl calls it: one gRPC channel, every call with a deadline, every answer
checked before it is believed.

``Remote`` is the only thing in irctl that talks to a build farm: the remote cache and remote
execution (``backend.farm``) and the worker all go through it, so what a server may send — sizes,
digests, error text — is refused or cleaned here once.  gRPC is imported here and nowhere else in
irctl, and only when a ``Remote`` is made: a build without a farm never loads it.
"""

from __future__ import annotations

import io
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Mapping

from google.protobuf import message_factory

from backend.reapi import errors
from backend.reapi.address import Endpoint
from backend.reapi.blobstream import CHUNK, BlobReader, read_resource, write_requests, write_resource
from backend.reapi.digests import EMPTY, Digest, DigestError, check, digest_of, from_proto, to_proto
from backend.reapi.execution import STREAM_WINDOW, follow
from backend.reapi.errors import BlobMismatch, BlobNotFound, RemoteError, Unreachable
from backend.reapi.protos import bots_pb2, bytestream_pb2 as bs_pb2, remote_execution_pb2 as re_pb2

__all__ = ["Remote", "Caps", "Digest", "RemoteError", "Unreachable", "BlobMismatch", "BlobNotFound"]

ActionResult = re_pb2.ActionResult
ExecuteResponse = re_pb2.ExecuteResponse
BotSession = bots_pb2.BotSession

DEFAULT_BATCH = 4 << 20  # REAPI: max_batch_total_size_bytes 0 means "no limit", i.e. gRPC's 4 MiB
BATCH_OVERHEAD = 256  # per blob in a batch message (digest, framing), and once per message
MAX_MESSAGE = 16 << 20  # the largest message accepted from a server (gRPC's own default is 4 MiB)
FIND_MISSING_CHUNK = 4096  # digests per FindMissingBlobs request (~0.4 MiB)
CANCEL_TIMEOUT = 5.0  # seconds to tell a server an execution was given up (the build is stopping)
STREAM_RATE = 1 << 20  # bytes/s a blob stream is given on top of the deadline before it times out


@dataclass(frozen=True)
class Caps:
    exec_enabled: bool
    ac_update: bool  # the server accepts UpdateActionResult from clients
    max_batch: int  # total bytes of one batch call, as this client uses it (≤ 4 MiB)
    digest_ok: bool  # SHA256 is offered (capabilities() raises otherwise; kept for callers' logs)


class Remote:
    """One REAPI server (``Endpoint``); thread-safe.  Every method raises ``RemoteError`` (one line)."""

    def __init__(self, endpoint: Endpoint, *, timeout: float = 60.0):
        # gRPC's core logs to stderr on its own (a server's GOAWAY, a failed TLS handshake): what
        # went wrong reaches the user as this client's one-line errors instead.  GRPC_VERBOSITY=INFO
        # (set by the user) shows that log again.  Read once, when grpc is first imported.
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
        import grpc  # lazy: a build without a farm never loads grpc

        # lazy: its Operation module (googleapis-common-protos) imports grpc too
        from google.longrunning import operations_proto_pb2

        # lazy: it imports that Operation module
        from backend.reapi.protos import execution_service_pb2

        self.endpoint, self.url, self.timeout = endpoint, endpoint.url, timeout
        options = [("grpc.max_receive_message_length", MAX_MESSAGE)]
        # the resolver named: gRPC reads "unix:7" (grpc://unix:7, host "unix") as the Unix socket ./7
        target = f"dns:///{endpoint.target}"
        self._channel = (grpc.secure_channel(target, grpc.ssl_channel_credentials(), options)
                         if endpoint.tls else grpc.insecure_channel(target, options))
        self._reached = False
        self._caps: Caps | None = None
        self._lock = threading.Lock()
        services = {**re_pb2.DESCRIPTOR.services_by_name, **bs_pb2.DESCRIPTOR.services_by_name,
                    **bots_pb2.DESCRIPTOR.services_by_name, **execution_service_pb2.DESCRIPTOR.services_by_name,
                    **operations_proto_pb2.DESCRIPTOR.services_by_name}
        self._calls: dict[str, tuple[Callable, Callable[[bytes], object], bool]] = {}
        for service in services.values():
            for method in service.methods:
                kind = {(False, False): self._channel.unary_unary, (False, True): self._channel.unary_stream,
                        (True, False): self._channel.stream_unary}[method.client_streaming, method.server_streaming]
                # responses arrive as bytes and are parsed here: gRPC would log a traceback for a
                # malformed one and report it as INTERNAL
                raw = kind(f"/{service.full_name}/{method.name}", request_serializer=_serialize)
                label = f"ByteStream.{method.name}" if service.name == "ByteStream" else method.name
                parse = _parser(self.url, label, message_factory.GetMessageClass(method.output_type))
                self._calls[method.name] = raw, parse, method.server_streaming

    # ------------------------------------------------------------------ plumbing

    def _open(self, rpc: str, request, timeout: float):
        """The raw call ``rpc``: its parsed response, or for a server stream the stream of them."""
        raw, parse, streams = self._calls[rpc]
        reply = raw(request, timeout=timeout)
        return ParsedStream(reply, parse) if streams else parse(reply)

    def _call(self, rpc: str, request, *, retry: bool = True, timeout: float | None = None):
        """A unary call with a deadline, retried when safe; gRPC errors become ``RemoteError``."""
        try:
            response = errors.with_retries(lambda: self._open(rpc, request, timeout or self.timeout), retry=retry)
        except Exception as e:
            if not errors.code_of(e):
                raise
            raise self._fail(rpc, e) from None
        self._reached = True
        return response

    def _fail(self, rpc: str, error: BaseException) -> RemoteError:
        return errors.translate(self.url, rpc, error, reached=self._reached)

    def _refuse(self, what: str) -> RemoteError:
        return RemoteError(self.url, what)

    def _digest_from(self, pb, rpc: str) -> Digest:
        try:
            return from_proto(pb)
        except DigestError as e:
            raise self._refuse(f"{rpc}: {errors.clean(str(e))}") from None

    def _stream_timeout(self, size: int) -> float:
        return self.timeout + size / STREAM_RATE

    # ------------------------------------------------------------------ capabilities

    def capabilities(self) -> Caps:
        """What the server offers (asked once, then remembered).  ``Unreachable`` when it cannot be
        reached; ``RemoteError`` when it does not offer SHA-256, the only digest function irctl uses."""
        if self._caps is not None:
            return self._caps
        reply = self._call("GetCapabilities", re_pb2.GetCapabilitiesRequest(instance_name=self.endpoint.instance))
        cache, execution = reply.cache_capabilities, reply.execution_capabilities
        offered = set(cache.digest_functions) | set(execution.digest_functions)
        if execution.digest_function:
            offered.add(execution.digest_function)
        sha256 = re_pb2.DigestFunction.SHA256
        if offered and sha256 not in offered:
            names = ", ".join(sorted(re_pb2.DigestFunction.Value.Name(v) if v in re_pb2.DigestFunction.Value.values()
                                     else str(v) for v in offered))
            raise self._refuse(f"does not offer the SHA256 digest function (it offers {names})")
        limit = cache.max_batch_total_size_bytes
        caps = Caps(exec_enabled=execution.exec_enabled,
                    ac_update=cache.action_cache_update_capabilities.update_enabled,
                    max_batch=min(limit, DEFAULT_BATCH) if limit > 0 else DEFAULT_BATCH, digest_ok=True)
        with self._lock:
            self._caps = caps
        return caps

    def _fits_batch(self, size: int) -> bool:
        return size + 2 * BATCH_OVERHEAD <= self.capabilities().max_batch

    # ------------------------------------------------------------------ CAS

    def find_missing(self, digests: Iterable[Digest]) -> set[Digest]:
        """Which of ``digests`` the CAS lacks (the empty blob never is: every server has it)."""
        asked = sorted({check(d) for d in digests} - {EMPTY})
        missing: set[Digest] = set()
        for start in range(0, len(asked), FIND_MISSING_CHUNK):
            part = asked[start:start + FIND_MISSING_CHUNK]
            reply = self._call("FindMissingBlobs", re_pb2.FindMissingBlobsRequest(
                instance_name=self.endpoint.instance, blob_digests=[to_proto(d) for d in part]))
            missing.update(self._digest_from(pb, "FindMissingBlobs") for pb in reply.missing_blob_digests)
        return missing & set(asked)  # a server naming digests nobody asked about is ignored

    def upload_bytes(self, data: bytes) -> Digest:
        """Stores ``data`` in the CAS (one batch call when small, else a ByteStream Write)."""
        digest = digest_of(data)
        self.upload_blobs({digest: data})
        return digest

    def upload_blobs(self, blobs: Mapping[Digest, bytes]) -> None:
        """Stores every blob, as few batch calls as the server's batch limit allows; a blob too big for
        a batch is streamed.  Each blob is checked against its digest first (a caller's bug, caught)."""
        batch: list[tuple[Digest, bytes]] = []
        used = BATCH_OVERHEAD
        for digest, data in blobs.items():
            if digest_of(data) != check(digest):
                raise BlobMismatch(self.url, f"refusing to upload bytes that are not {digest[0]}")
            if digest == EMPTY:
                continue
            if not self._fits_batch(len(data)):
                self._write(digest, lambda: _BytesSource(data))
                continue
            if used + len(data) + BATCH_OVERHEAD > self.capabilities().max_batch:
                self._batch_update(batch)
                batch, used = [], BATCH_OVERHEAD
            batch.append((digest, data))
            used += len(data) + BATCH_OVERHEAD
        if batch:
            self._batch_update(batch)

    def _batch_update(self, batch: list[tuple[Digest, bytes]]) -> None:
        request = re_pb2.BatchUpdateBlobsRequest(instance_name=self.endpoint.instance, requests=[
            re_pb2.BatchUpdateBlobsRequest.Request(digest=to_proto(d), data=data) for d, data in batch])
        reply = self._call("BatchUpdateBlobs", request)
        confirmed = set()
        for response in reply.responses:
            digest = self._digest_from(response.digest, "BatchUpdateBlobs")
            if response.status.code != 0:
                raise self._refuse(f"BatchUpdateBlobs: {digest[0]}: {errors.status_text(response.status)}")
            confirmed.add(digest)
        unconfirmed = {d for d, _ in batch} - confirmed
        if unconfirmed:
            raise self._refuse(f"BatchUpdateBlobs: {len(unconfirmed)} blob(s) not confirmed, e.g. "
                               f"{min(unconfirmed)[0]}")

    def upload_file(self, path: str | Path, digest: Digest) -> None:
        """Stores the file ``path`` as the blob ``digest``, streamed in chunks of at most 1 MiB when it
        does not fit a batch; ``BlobMismatch`` when its bytes are not ``digest`` (it changed)."""
        check(digest)
        if digest == EMPTY:
            return
        if self._fits_batch(digest[1]):
            with open(path, "rb") as f:
                data = f.read(digest[1] + 1)
            if digest_of(data) != digest:
                raise BlobMismatch(self.url, f"{path}: its bytes are not {digest[0]} (did it change?)")
            self._batch_update([(digest, data)])
            return
        self._write(digest, lambda: open(path, "rb"), what=str(path))

    def _write(self, digest: Digest, source: Callable[[], BinaryIO], what: str = "") -> None:
        def once() -> bs_pb2.WriteResponse:
            failure: list = []
            with source() as f:
                requests = write_requests(write_resource(self.endpoint.instance, digest), f, digest, failure)
                try:
                    reply = self._open("Write", requests, self._stream_timeout(digest[1]))
                except Exception:
                    if failure:
                        return None
                    raise
            if failure:
                return None
            return reply

        try:
            reply = errors.with_retries(once)
        except Exception as e:
            if not errors.code_of(e):
                raise
            raise self._fail("ByteStream.Write", e) from None
        if reply is None:
            raise BlobMismatch(self.url, f"{what or 'upload'}: its bytes are not {digest[0]} (did it change?)")
        self._reached = True
        if reply.committed_size not in (digest[1], -1):
            raise self._refuse(f"ByteStream.Write: committed {reply.committed_size} of {digest[1]} bytes "
                               f"of {digest[0]}")

    def read_bytes(self, digest: Digest, *, cap: int) -> bytes:
        """The blob ``digest``, verified (hash and size); refused before reading when bigger than ``cap``."""
        check(digest)
        if digest[1] > cap:
            raise self._refuse(f"blob {digest[0]} is {digest[1]} bytes, more than the {cap} irctl reads")
        if digest[1] == 0 or not self._fits_batch(digest[1]):
            with self.open_blob(digest) as f:
                return f.read()
        reply = self._call("BatchReadBlobs", re_pb2.BatchReadBlobsRequest(
            instance_name=self.endpoint.instance, digests=[to_proto(digest)]))
        for response in reply.responses:
            if self._digest_from(response.digest, "BatchReadBlobs") != digest:
                continue
            if response.status.code == 5:  # NOT_FOUND
                raise BlobNotFound(self.url, f"blob {digest[0]} is not in the CAS")
            if response.status.code != 0:
                raise self._refuse(f"BatchReadBlobs: {digest[0]}: {errors.status_text(response.status)}")
            if digest_of(response.data) != digest:
                raise BlobMismatch(self.url, f"blob {digest[0]}: the server sent {len(response.data)} bytes "
                                             f"hashing to {digest_of(response.data)[0]}")
            return response.data
        raise self._refuse(f"BatchReadBlobs: no answer for {digest[0]}")

    def open_blob(self, digest: Digest) -> BinaryIO:
        """The blob ``digest`` as a readable binary file, streamed (ByteStream Read): never more than
        its size is accepted, and reading to the end checks its hash (``BlobMismatch``)."""
        check(digest)
        resource = read_resource(self.endpoint.instance, digest)

        def open_at(offset: int):
            return self._open("Read", bs_pb2.ReadRequest(resource_name=resource, read_offset=offset),
                              self._stream_timeout(digest[1] - offset))

        reader = BlobReader(self.url, digest, open_at, lambda e: self._fail("ByteStream.Read", e), idle=self.timeout)
        return io.BufferedReader(reader, buffer_size=CHUNK)

    # ------------------------------------------------------------------ action cache

    def get_action_result(self, action: Digest) -> ActionResult | None:
        """The cached result of ``action``, ``None`` when the cache has none."""
        request = re_pb2.GetActionResultRequest(instance_name=self.endpoint.instance, action_digest=to_proto(action))
        try:
            return self._call("GetActionResult", request)
        except RemoteError as e:
            if e.code == "NOT_FOUND":
                return None
            raise

    def update_action_result(self, action: Digest, result: ActionResult) -> None:
        self._call("UpdateActionResult", re_pb2.UpdateActionResultRequest(
            instance_name=self.endpoint.instance, action_digest=to_proto(action), action_result=result))

    # ------------------------------------------------------------------ execution

    def execute(self, action: Digest, *, skip_cache_lookup: bool = True,
                on_stage: Callable[[str], None] | None = None,
                cancel: threading.Event | None = None) -> ExecuteResponse:
        """Runs ``action`` on the farm and waits for its response (see ``backend.reapi.execution``)."""
        request = re_pb2.ExecuteRequest(instance_name=self.endpoint.instance, action_digest=to_proto(action),
                                        skip_cache_lookup=skip_cache_lookup)

        def start(rpc: str, message):
            return self._open(rpc, message, STREAM_WINDOW)

        return follow(self.url, request, start, self._fail, on_stage=on_stage, cancel=cancel, abandon=self._abandon)

    def _abandon(self, operation: str) -> None:
        """Cancel ``operation`` (Operations.CancelOperation), best effort: BuildGrid then takes the step
        back from its worker unless another client waits for the same action; a server that cannot
        leaves it to its own execution timeout."""
        from google.longrunning import operations_proto_pb2

        try:
            self._call("CancelOperation", operations_proto_pb2.CancelOperationRequest(name=operation), retry=False,
                       timeout=min(self.timeout, CANCEL_TIMEOUT))
        except RemoteError:
            pass

    # ------------------------------------------------------------------ workers (Remote Workers API)

    def create_bot_session(self, bot_session: BotSession, *, timeout: float | None = None) -> BotSession:
        """Registers a bot with the server's instance; BuildGrid answers when it has a lease for it or
        its long-poll ends, so ``timeout`` should be longer than the server's keepalive."""
        request = bots_pb2.CreateBotSessionRequest(parent=self.endpoint.instance, bot_session=bot_session)
        return self._call("CreateBotSession", request, retry=False, timeout=timeout)

    def update_bot_session(self, name: str, bot_session: BotSession, *, timeout: float | None = None) -> BotSession:
        request = bots_pb2.UpdateBotSessionRequest(name=name, bot_session=bot_session)
        return self._call("UpdateBotSession", request, retry=False, timeout=timeout)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Remote":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _serialize(message) -> bytes:
    return message.SerializeToString()


def _parser(url: str, rpc: str, cls) -> Callable[[bytes], object]:
    def parse(data: bytes):
        try:
            return cls.FromString(data)
        except Exception:  # DecodeError, or nesting deeper than protobuf's recursion limit
            raise RemoteError(url, f"{rpc}: the server sent a malformed {cls.DESCRIPTOR.name}") from None
    return parse


class ParsedStream:
    """A server stream whose messages are parsed here; a malformed one cancels the stream."""

    def __init__(self, call, parse: Callable[[bytes], object]):
        self._call, self._parse = call, parse

    def __iter__(self) -> "ParsedStream":
        return self

    def __next__(self):
        data = next(self._call)
        try:
            return self._parse(data)
        except RemoteError:
            self._call.cancel()
            raise

    def cancel(self) -> None:
        self._call.cancel()


class _BytesSource:
    """``bytes`` as the context-managed file ``_write`` streams from."""

    def __init__(self, data: bytes):
        self._file = io.BytesIO(data)

    def __enter__(self):
        return self._file

    def __exit__(self, *exc) -> None:
        self._file.close()
