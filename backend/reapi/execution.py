"""Following one ``Execute`` to its end: the Operation stream, re-attached when it drops.

A REAPI execution outlives any one stream: the server keeps the operation while its stream ends,
breaks or times out, and ``WaitExecution(name)`` picks it up again.  So a stream that stops before
the operation is ``done`` is re-attached, and only streams that keep ending or breaking early (a
bounded number in a row) give up: a server that closes every stream after minutes is re-attached to
for as long as the action runs, one that closes them at once is not hammered forever.  What the server finally says is checked: an Operation ``error``, a response that is not an
``ExecuteResponse`` or an ``ExecuteResponse`` whose ``status`` is not OK is a ``RemoteError`` with the
server's message (cleaned).  A step's own non-zero exit is not an error here: it is in the result.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterator

from backend.reapi import errors
from backend.reapi.errors import RemoteError
from backend.reapi.protos import remote_execution_pb2 as re_pb2

REATTACH = 5  # streams in a row that ended or broke early (before HEALTHY) before giving up
HEALTHY = 10.0  # seconds: a stream that lasted this long before it ended was no failure
STREAM_WINDOW = 600.0  # seconds one Execute/WaitExecution stream may last before it is re-attached
# a stream that broke with one of these is re-attached to (the operation lives on at the server)
RESUMABLE = frozenset({"UNAVAILABLE", "CANCELLED", "INTERNAL", "UNKNOWN", "RESOURCE_EXHAUSTED",
                       "DEADLINE_EXCEEDED", "ABORTED"})
_STAGES = re_pb2.ExecutionStage.Value


def follow(url: str, request: re_pb2.ExecuteRequest, start: Callable[[str, object], Iterator],
           fail: Callable[[str, BaseException], RemoteError], *, on_stage: Callable[[str], None] | None,
           cancel: threading.Event | None, abandon: Callable[[str], None] | None = None) -> re_pb2.ExecuteResponse:
    """The ``ExecuteResponse`` of ``request`` (see the module docstring) from the server ``url``:
    ``start(rpc, message)`` opens an ``Execute``/``WaitExecution`` stream, ``fail(rpc, error)`` turns
    a gRPC error into the ``RemoteError`` to raise, ``abandon(name)`` asks the server to cancel the
    operation once ``cancel`` is set (a dropped stream alone leaves the step running on its worker)."""
    name = ""  # the operation's name, once the server said it

    def cancelled() -> RemoteError:
        if name and abandon is not None:
            abandon(name)
        return RemoteError(url, "execution cancelled")

    stage = None
    failures = 0
    while True:
        if cancel is not None and cancel.is_set():
            raise cancelled()
        rpc = "WaitExecution" if name else "Execute"
        message = re_pb2.WaitExecutionRequest(name=name) if name else request
        stream = start(rpc, message)
        opened = time.monotonic()
        watcher = _cancel_on(cancel, stream)
        try:
            for operation in stream:
                if operation.name and not name:
                    name = operation.name
                new = _stage(url, rpc, operation)
                if new is not None and new != stage:
                    stage = new
                    if on_stage is not None:
                        on_stage(_STAGES.Name(new))
                if operation.done:
                    return _response(url, rpc, operation)
        except Exception as e:
            code = errors.code_of(e)
            if not code:
                stream.cancel()
                raise
            if cancel is not None and cancel.is_set():
                raise cancelled() from None
            if code == "NOT_FOUND" and name:  # the server forgot the operation (restarted): run it again
                name = ""
            elif code == "DEADLINE_EXCEEDED" and name:
                continue  # our own window closed while the action runs: re-attach, no failure
            elif code not in RESUMABLE:
                raise fail(rpc, e) from None
            failures = _early(failures, opened)
            if failures >= REATTACH:
                raise fail(rpc, e) from None
            time.sleep(errors.BACKOFF * 2 ** failures)
            continue
        finally:
            watcher.set()
        failures = _early(failures, opened)  # the stream ended before the operation was done
        if failures >= REATTACH:
            raise RemoteError(url, f"{rpc}: the operation stream ended {REATTACH} times before "
                                   f"the action finished")
        time.sleep(errors.BACKOFF * 2 ** failures)


def _early(failures: int, opened: float) -> int:
    """The count of streams in a row that stopped early, with the one opened at ``opened``."""
    return 1 if time.monotonic() - opened >= HEALTHY else failures + 1


def _stage(url: str, rpc: str, operation) -> int | None:
    metadata = re_pb2.ExecuteOperationMetadata()
    if operation.HasField("metadata") and _unpack(url, rpc, operation.metadata, metadata):
        return metadata.stage if metadata.stage in _STAGES.values() else None
    return None


def _unpack(url: str, rpc: str, packed, message) -> bool:
    """``packed`` (an ``Any``) into ``message``: False when it holds another type; a ``RemoteError``
    when it is malformed (the client parses it, not gRPC: protobuf would raise ``DecodeError``)."""
    try:
        return packed.Unpack(message)
    except Exception:  # DecodeError, or nesting deeper than protobuf's recursion limit
        raise RemoteError(url, f"{rpc}: the server sent a malformed {message.DESCRIPTOR.name}") from None


def _response(url: str, rpc: str, operation) -> re_pb2.ExecuteResponse:
    if operation.HasField("error"):
        raise RemoteError(url, f"execution failed: {errors.status_text(operation.error)}")
    response = re_pb2.ExecuteResponse()
    if not operation.HasField("response") or not _unpack(url, rpc, operation.response, response):
        raise RemoteError(url, "execution finished without an ExecuteResponse")
    if response.status.code != 0:
        detail = errors.status_text(response.status)
        if response.message:
            detail += f"; {errors.clean(response.message)}"
        raise RemoteError(url, f"execution failed: {detail}")
    return response


def _cancel_on(cancel: threading.Event | None, stream) -> threading.Event:
    """An event to set when the stream is finished with; until then ``cancel`` cancels the stream."""
    finished = threading.Event()
    if cancel is not None:
        def watch() -> None:
            while not finished.wait(0.1):
                if cancel.is_set():
                    stream.cancel()
                    return

        threading.Thread(target=watch, name="reapi-cancel", daemon=True).start()
    return finished
