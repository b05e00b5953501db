"""The client against a server that lies, stalls or shouts: every answer is checked, every read is
capped, every call has a deadline, and every error is one clean line naming the server."""

from __future__ import annotations

import hashlib
import socket
import threading
import time

import grpc
import pytest
from google.longrunning import operations_proto_pb2 as ops_pb2
from google.rpc import status_pb2

from backend.reapi import errors
from backend.reapi.address import parse_endpoint
from backend.reapi.client import BlobMismatch, BlobNotFound, Remote, RemoteError, Unreachable
from backend.reapi.digests import digest_of, to_proto
from backend.reapi.protos import bytestream_pb2 as bs, remote_execution_pb2 as pb
from tests.reapi.fakeserver import FakeServer

BLOB = bytes(range(256)) * 40  # 10 KiB
D = digest_of(BLOB)


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch):
    monkeypatch.setattr(errors, "BACKOFF", 0.0)


@pytest.fixture
def serve():
    made = []

    def start(**handlers) -> FakeServer:
        server = FakeServer(**handlers)
        made.append(server)
        return server

    yield start
    for server in made:
        server.stop()


def caps(max_batch=0, functions=(pb.DigestFunction.SHA256,)):
    def handler(request, context):
        return pb.ServerCapabilities(cache_capabilities=pb.CacheCapabilities(
            digest_functions=list(functions), max_batch_total_size_bytes=max_batch))
    return handler


def chunks(*parts):
    def handler(request, context):
        for part in parts:
            yield bs.ReadResponse(data=part)
    return handler


def one_line(error: BaseException, url: str) -> str:
    text = str(error)
    assert text.startswith(f"REAPI server {url}: ") and "\n" not in text and "\x1b" not in text
    return text


# ------------------------------------------------------------------ reads


def test_a_stream_longer_than_the_digest_is_refused_mid_stream(serve):
    sent = []

    def endless(request, context):
        while context.is_active():
            sent.append(1)
            yield bs.ReadResponse(data=b"x" * 65536)

    server = serve(Read=endless)
    with pytest.raises(BlobMismatch, match="sent more than its 10240 bytes"):
        server.remote().open_blob(D).read()
    time.sleep(0.5)
    so_far = len(sent)
    time.sleep(0.5)
    # the client cancelled the stream (the server stopped sending) rather than draining an endless one;
    # what was sent is at most what HTTP/2 flow control lets through before the client reads it
    assert len(sent) == so_far < 500


def test_a_stream_of_the_wrong_bytes_is_refused(serve):
    server = serve(Read=chunks(BLOB[:5000], b"y" * 5240))
    with pytest.raises(BlobMismatch, match="its bytes hash to sha256:") as e:
        server.remote().open_blob(D).read()
    one_line(e.value, server.url)


def test_a_short_stream_is_refused(serve):
    server = serve(Read=chunks(BLOB[:100]))
    with pytest.raises(BlobMismatch, match="ended after 100 of 10240 bytes"):
        server.remote().open_blob(D).read()


def test_a_stream_is_read_as_a_file_and_resumed_where_it_broke(serve):
    offsets = []

    def flaky(request, context):
        offsets.append(request.read_offset)
        yield bs.ReadResponse(data=BLOB[request.read_offset:request.read_offset + 4000])
        if len(offsets) == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")
        yield bs.ReadResponse(data=BLOB[request.read_offset + 4000:])

    server = serve(Read=flaky)
    with server.remote().open_blob(D) as f:
        assert f.read(10) == BLOB[:10] and f.read() == BLOB[10:]
    assert offsets == [0, 4000]


def test_a_missing_blob_is_said_so(serve):
    def gone(request, context):
        context.abort(grpc.StatusCode.NOT_FOUND, "no such blob")
        yield

    server = serve(Read=gone)
    with pytest.raises(BlobNotFound, match=f"blob {D[0]} is not in the CAS"):
        server.remote().open_blob(D).read()


def test_a_batch_read_of_the_wrong_bytes_is_refused(serve):
    def wrong(request, context):
        return pb.BatchReadBlobsResponse(responses=[pb.BatchReadBlobsResponse.Response(
            digest=request.digests[0], data=b"z" * D[1])])

    server = serve(GetCapabilities=caps(), BatchReadBlobs=wrong)
    with pytest.raises(BlobMismatch, match=f"blob {D[0]}: the server sent 10240 bytes hashing to"):
        server.remote().read_bytes(D, cap=1 << 20)


def test_a_blob_bigger_than_the_cap_is_refused_before_reading(serve):
    server = serve(GetCapabilities=caps(), Read=chunks(BLOB), BatchReadBlobs=lambda r, c: None)
    with pytest.raises(RemoteError, match="is 10240 bytes, more than the 4096 irctl reads"):
        server.remote().read_bytes(D, cap=4096)
    assert server.calls == []


def test_the_empty_blob_is_never_asked_for(serve, tmp_path):
    server = serve()
    remote = server.remote()
    assert remote.read_bytes(digest_of(b""), cap=0) == b""
    with pytest.raises(BlobMismatch, match="its bytes hash to sha256:e3b0c442"):
        remote.read_bytes(("sha256:" + "0" * 64, 0), cap=10)
    (tmp_path / "empty").write_bytes(b"")
    remote.upload_file(tmp_path / "empty", digest_of(b""))
    remote.upload_blobs({digest_of(b""): b""})
    assert remote.find_missing([digest_of(b"")]) == set() and server.calls == []


# ------------------------------------------------------------------ errors, retries, deadlines


def test_an_unreachable_server_is_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connection refused
        remote = Remote(parse_endpoint(f"grpc://127.0.0.1:{port}", "--remote")[0], timeout=5)
        with pytest.raises(Unreachable) as e:
            remote.capabilities()
    assert str(e.value) == f"REAPI server grpc://127.0.0.1:{port}: cannot reach it (connection refused)"


def test_an_unknown_host_is_one_line():
    with pytest.raises(Unreachable) as e:
        Remote(parse_endpoint("grpc://no-such-host.invalid:8980", "--remote")[0], timeout=5).capabilities()
    assert str(e.value) == "REAPI server grpc://no-such-host.invalid:8980: cannot reach it (unknown host)"


def test_control_characters_in_a_servers_message_do_not_reach_the_terminal(serve):
    def shout(request, context):
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "no\x1b]0;pwned\x07\x1b[2J\nsecond line\u2028")

    server = serve(FindMissingBlobs=shout)
    with pytest.raises(RemoteError) as e:
        server.remote().find_missing([D])
    text = one_line(e.value, server.url)
    assert text == (f"REAPI server {server.url}: FindMissingBlobs: permission denied "
                    r"(no\x1b]0;pwned\x07\x1b[2J\nsecond line\u2028)")


def test_unavailable_is_retried_a_bounded_number_of_times(serve):
    answers = ["UNAVAILABLE", "RESOURCE_EXHAUSTED"]

    def flaky(request, context):
        if answers:
            context.abort(getattr(grpc.StatusCode, answers.pop(0)), "busy")
        return pb.FindMissingBlobsResponse(missing_blob_digests=list(request.blob_digests))

    server = serve(FindMissingBlobs=flaky)
    assert server.remote().find_missing([D]) == {D}
    assert server.calls == ["FindMissingBlobs"] * 3

    server.handlers["FindMissingBlobs"] = lambda r, c: c.abort(grpc.StatusCode.UNAVAILABLE, "down")
    server.calls.clear()
    with pytest.raises(Unreachable, match="cannot reach it"):
        server.remote().find_missing([D])
    assert len(server.calls) == errors.ATTEMPTS


def test_a_refusal_is_not_retried(serve):
    server = serve(FindMissingBlobs=lambda r, c: c.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad"))
    with pytest.raises(RemoteError, match="FindMissingBlobs: refused the request \\(bad\\)$"):
        server.remote().find_missing([D])
    assert server.calls == ["FindMissingBlobs"]


def test_every_call_has_a_deadline(serve):
    def stall(request, context):
        time.sleep(3)
        return pb.ServerCapabilities()

    server = serve(GetCapabilities=stall, GetActionResult=stall)
    remote = server.remote(timeout=0.3)
    start = time.monotonic()
    with pytest.raises(Unreachable, match=r"cannot reach it \(timed out\)$"):
        remote.capabilities()  # nothing answered yet: the server is as good as unreachable
    server.handlers["GetCapabilities"] = caps()
    remote.capabilities()
    with pytest.raises(RemoteError, match="GetActionResult: timed out$") as e:
        remote.get_action_result(D)
    assert not isinstance(e.value, Unreachable)
    assert time.monotonic() - start < 2.5


@pytest.mark.parametrize("rpc, label, handler, call", [
    ("GetCapabilities", "GetCapabilities", lambda r, c: b"\xff\xff\xff", lambda remote: remote.capabilities()),
    ("Read", "ByteStream.Read", lambda r, c: iter([bs.ReadResponse(data=b"a").SerializeToString(), b"\x0a\x05ab"]),
     lambda remote: remote.open_blob(digest_of(b"abc")).read()),
    ("Execute", "Execute", lambda r, c: iter([b"\x12\xff"]), lambda remote: remote.execute(D)),
])
def test_a_malformed_message_is_one_line_without_a_traceback(serve, capfd, rpc, label, handler, call):
    server = serve(**{rpc: handler})
    with pytest.raises(RemoteError, match=f"{label}: the server sent a malformed ") as e:
        call(server.remote())
    one_line(e.value, server.url)
    assert server.calls == [rpc]  # not retried
    assert "Traceback" not in capfd.readouterr().err


def test_a_malformed_digest_from_the_server_is_refused(serve):
    def evil(request, context):
        return pb.FindMissingBlobsResponse(missing_blob_digests=[pb.Digest(hash="../../x\x1b[1m", size_bytes=1)])

    server = serve(FindMissingBlobs=evil)
    with pytest.raises(RemoteError, match="FindMissingBlobs: not a sha256 digest") as e:
        server.remote().find_missing([D])
    one_line(e.value, server.url)


def test_missing_digests_nobody_asked_about_are_ignored(serve):
    other = digest_of(b"other")
    server = serve(FindMissingBlobs=lambda r, c: pb.FindMissingBlobsResponse(
        missing_blob_digests=[to_proto(other), *r.blob_digests]))
    assert server.remote().find_missing([D, D, digest_of(b"")]) == {D}


def test_find_missing_asks_in_bounded_requests(serve):
    sizes = []

    def all_missing(request, context):
        sizes.append(len(request.blob_digests))
        return pb.FindMissingBlobsResponse(missing_blob_digests=list(request.blob_digests))

    server = serve(FindMissingBlobs=all_missing)
    wanted = {digest_of(i.to_bytes(4, "big")) for i in range(5000)}
    assert server.remote().find_missing(wanted) == wanted
    assert sizes == [4096, 904]


def test_a_server_without_sha256_is_refused(serve):
    server = serve(GetCapabilities=caps(functions=(pb.DigestFunction.BLAKE3, 77)))
    with pytest.raises(RemoteError, match=r"does not offer the SHA256 digest function \(it offers 77, BLAKE3\)"):
        server.remote().capabilities()


# ------------------------------------------------------------------ uploads


def test_batches_respect_the_servers_limit_and_big_blobs_are_streamed(serve):
    batches, writes = [], []

    def batch(request, context):
        batches.append([len(r.data) for r in request.requests])
        return pb.BatchUpdateBlobsResponse(responses=[pb.BatchUpdateBlobsResponse.Response(digest=r.digest)
                                                      for r in request.requests])

    def write(requests, context):
        got = list(requests)
        writes.append((got[0].resource_name, [r.resource_name for r in got[1:]], [r.write_offset for r in got],
                       [r.finish_write for r in got], b"".join(r.data for r in got)))
        return bs.WriteResponse(committed_size=sum(len(r.data) for r in got))

    server = serve(GetCapabilities=caps(max_batch=4000), BatchUpdateBlobs=batch, Write=write)
    remote = server.remote(",instance=main/farm")
    small = {digest_of(bytes([i]) * 1000): bytes([i]) * 1000 for i in range(5)}
    remote.upload_blobs(small)
    assert all(sum(sizes) + 256 * (len(sizes) + 1) <= 4000 for sizes in batches)
    assert sorted(s for sizes in batches for s in sizes) == [1000] * 5
    big = b"b" * (2 << 20)
    assert remote.upload_bytes(big) == digest_of(big)
    (first, rest, offsets, finish, data), = writes
    hex_ = digest_of(big)[0][7:]
    assert first.startswith("main/farm/uploads/") and first.endswith(f"/blobs/{hex_}/{2 << 20}")
    assert len(first.split("/")[3]) == 36  # a uuid4
    assert set(rest) == {""} and offsets == [0, 1 << 20] and finish == [False, True] and data == big


def test_a_file_that_is_not_its_digest_is_never_committed(serve, tmp_path):
    finished = []

    def write(requests, context):
        finished.extend(r.finish_write for r in requests)
        return bs.WriteResponse(committed_size=0)

    server = serve(GetCapabilities=caps(max_batch=1000), Write=write)
    path = tmp_path / "layer"
    path.write_bytes(b"a" * 3_000_000)
    with pytest.raises(BlobMismatch, match="its bytes are not sha256:"):
        server.remote().upload_file(path, digest_of(b"b" * 3_000_000))
    assert True not in finished


def test_a_batch_upload_a_server_does_not_confirm_is_an_error(serve):
    server = serve(GetCapabilities=caps(), BatchUpdateBlobs=lambda r, c: pb.BatchUpdateBlobsResponse(
        responses=[pb.BatchUpdateBlobsResponse.Response(digest=r.requests[0].digest, status=status_pb2.Status(
            code=8, message="quota\x1b[0m"))]))
    with pytest.raises(RemoteError, match=r"BatchUpdateBlobs: sha256:\w+: overloaded \(quota\\x1b\[0m\)$"):
        server.remote().upload_bytes(b"data")


# ------------------------------------------------------------------ execution


def operation(name="op/1", stage=None, done=False, response=None, error=None):
    op = ops_pb2.Operation(name=name, done=done)
    if stage is not None:
        op.metadata.Pack(pb.ExecuteOperationMetadata(stage=stage))
    if response is not None:
        op.response.Pack(response)
    if error is not None:
        op.error.CopyFrom(error)
    return op


def test_execute_reattaches_when_the_stream_ends_or_breaks(serve):
    waits, stages = [], []
    ok = pb.ExecuteResponse(result=pb.ActionResult(exit_code=3))

    def execute(request, context):
        assert request.action_digest == to_proto(D) and not request.skip_cache_lookup
        yield operation(stage=pb.ExecutionStage.QUEUED)

    def wait(request, context):
        waits.append(request.name)
        yield operation(stage=pb.ExecutionStage.EXECUTING)
        if len(waits) == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "dropped")
        yield operation(stage=pb.ExecutionStage.COMPLETED, done=True, response=ok)

    server = serve(Execute=execute, WaitExecution=wait)
    response = server.remote().execute(D, skip_cache_lookup=False, on_stage=stages.append)
    assert response.result.exit_code == 3
    assert waits == ["op/1", "op/1"] and stages == ["QUEUED", "EXECUTING", "COMPLETED"]


def test_execute_gives_up_on_a_stream_that_never_finishes(serve, monkeypatch):
    server = serve(Execute=lambda r, c: iter([operation()]), WaitExecution=lambda r, c: iter([operation()]))
    with pytest.raises(RemoteError, match="ended 5 times before the action finished"):
        server.remote().execute(D)
    assert server.calls == ["Execute"] + ["WaitExecution"] * 4


@pytest.mark.parametrize("op, message", [
    (operation(done=True, error=status_pb2.Status(code=13, message="bot\x1b[31m died")),
     r"execution failed: internal server error \(bot\\x1b\[31m died\)"),
    (operation(done=True, response=pb.ExecuteResponse(status=status_pb2.Status(code=4, message="too slow"),
                                                       message="see logs")),
     r"execution failed: timed out \(too slow\); see logs"),
    (operation(done=True), "execution finished without an ExecuteResponse"),
    (operation(done=True, response=pb.ActionResult()), "execution finished without an ExecuteResponse"),
])
def test_a_failed_execution_is_a_remote_error(serve, op, message):
    server = serve(Execute=lambda r, c: iter([op]))
    with pytest.raises(RemoteError, match=message) as e:
        server.remote().execute(D)
    one_line(e.value, server.url)


def test_execute_can_be_cancelled(serve):
    def forever(request, context):
        yield operation(stage=pb.ExecutionStage.EXECUTING)
        while context.is_active():
            time.sleep(0.05)

    server = serve(Execute=forever)
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    start = time.monotonic()
    with pytest.raises(RemoteError, match="execution cancelled"):
        server.remote().execute(D, cancel=cancel)
    assert time.monotonic() - start < 2


def test_grpcs_own_log_stays_off_the_terminal():
    """A TLS handshake with something that is not a TLS server: gRPC's core would log it on stderr
    itself; the user reads the client's one line only (in a process where the client loads grpc)."""
    import os
    import subprocess
    import sys

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]

    def answer_garbage():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    threading.Thread(target=answer_garbage, daemon=True).start()
    code = ("from backend.reapi.address import parse_endpoint\nfrom backend.reapi.client import Remote\n"
            "from backend.reapi import errors\nerrors.BACKOFF = 0\n"
            f"remote = Remote(parse_endpoint('grpcs://127.0.0.1:{port}', '--remote')[0], timeout=5)\n"
            "try:\n    remote.capabilities()\nexcept errors.RemoteError as e:\n    print(e)\n")
    env = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    finally:
        listener.close()
    assert done.stdout == f"REAPI server grpcs://127.0.0.1:{port}: cannot reach it (TLS handshake failed)\n"
    assert done.stderr == ""
