"""Blobs streamed over ByteStream: a verified, size-capped reader and the requests of one upload.

A server's Read stream is hostile input: the reader keeps at most one message in memory, refuses the
first byte past the digest's size (mid-stream, before buffering more), and at the end refuses a
stream that came up short or whose bytes do not hash to the digest.  A stream that breaks with a
retryable status is resumed from the offset reached (ByteStream's ``read_offset``), a bounded number
of times.  An upload is streamed from its file in chunks and checked against its digest before the
chunk that finishes it is sent: a file that changed meanwhile is never committed under the old digest.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
import uuid
from typing import Callable, Iterator

from backend.reapi import errors
from backend.reapi.digests import Digest, hex_of
from backend.reapi.errors import BlobMismatch, BlobNotFound, RemoteError
from backend.reapi.protos import bytestream_pb2 as bs_pb2

CHUNK = 1 << 20  # ByteStream Write message payload; gRPC's default message limit is 4 MiB


def read_resource(instance: str, digest: Digest) -> str:
    name = f"blobs/{hex_of(digest)}/{digest[1]}"
    return f"{instance}/{name}" if instance else name


def write_resource(instance: str, digest: Digest) -> str:
    name = f"uploads/{uuid.uuid4()}/blobs/{hex_of(digest)}/{digest[1]}"
    return f"{instance}/{name}" if instance else name


class BlobReader(io.RawIOBase):
    """A blob read through ``ByteStream.Read`` as a readable binary file; ``open(offset)`` starts the
    server's stream at ``offset``, ``fail(rpc_error)`` turns a gRPC error into the ``RemoteError``.
    A stream that sends nothing for ``idle`` seconds is given up on: its deadline grows with the
    blob's size, which the server names (a huge blob and then silence would hold a build for days)."""

    def __init__(self, url: str, digest: Digest, open: Callable[[int], Iterator[bs_pb2.ReadResponse]],
                 fail: Callable[[BaseException], RemoteError], idle: float = 60.0):
        super().__init__()
        self._url, self._digest, self._size = url, digest, digest[1]
        self._open, self._fail, self._idle = open, fail, idle
        self._stream: Iterator[bs_pb2.ReadResponse] | None = None
        self._hash = hashlib.sha256()
        self._got = 0
        self._pending = memoryview(b"")
        self._retries = 0
        self._verified = False
        self._watchdog: _Watchdog | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            if self._verified:
                return 0
            chunk = self._next_chunk()
            if chunk is None:
                self._verify()
                return 0
            self._pending = memoryview(chunk)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _next_chunk(self) -> bytes | None:
        """The next non-empty message's bytes, ``None`` at the end of the stream; waited for at most
        ``idle`` seconds (empty messages are no progress)."""
        if self._watchdog is None:
            self._watchdog = _Watchdog(self._idle, self._cancel)
        self._watchdog.waiting(True)
        try:
            return self._next_chunk_unwatched()
        finally:
            self._watchdog.waiting(False)

    def _stalled(self) -> RemoteError:
        return RemoteError(self._url, f"ByteStream.Read: the server sent nothing for {self._idle:g} s "
                                      f"({self._got} of {self._size} bytes of {self._digest[0]})")

    def _next_chunk_unwatched(self) -> bytes | None:
        while True:
            if self._watchdog is not None and self._watchdog.fired:  # (between two streams: nothing to cancel)
                self._cancel()
                raise self._stalled()
            if self._stream is None:
                if self._size == 0:
                    return None
                self._stream = self._open(self._got)
            try:
                data = next(self._stream).data
            except StopIteration:
                self._stream = None
                return None
            except RemoteError:
                self._stream = None
                raise
            except Exception as e:
                self._stream = None
                if self._watchdog is not None and self._watchdog.fired:
                    raise self._stalled() from None
                if errors.code_of(e) in errors.RETRYABLE and self._retries < errors.ATTEMPTS - 1:
                    self._retries += 1
                    time.sleep(errors.BACKOFF * 2 ** self._retries)
                    continue  # resume at self._got
                failure = self._fail(e)
                if failure.code == "NOT_FOUND":
                    raise BlobNotFound(self._url, f"blob {self._digest[0]} is not in the CAS") from None
                raise failure from None
            if len(data) > self._size - self._got:
                self._cancel()
                raise BlobMismatch(self._url, f"blob {self._digest[0]}: the server sent more than its "
                                              f"{self._size} bytes")
            if data:
                self._got += len(data)
                self._hash.update(data)
                return data

    def _verify(self) -> None:
        if self._got != self._size:
            raise BlobMismatch(self._url, f"blob {self._digest[0]}: the stream ended after {self._got} "
                                          f"of {self._size} bytes")
        if "sha256:" + self._hash.hexdigest() != self._digest[0]:
            raise BlobMismatch(self._url, f"blob {self._digest[0]}: its bytes hash to "
                                          f"sha256:{self._hash.hexdigest()}")
        self._verified = True

    def _cancel(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None and hasattr(stream, "cancel"):
            stream.cancel()

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
        self._cancel()
        super().close()


class _Watchdog:
    """Calls ``expire()`` once the reader has waited ``idle`` seconds for one message; one timer a
    stream, re-armed when it wakes early (not one thread a message: a server picks their size)."""

    def __init__(self, idle: float, expire: Callable[[], None]):
        self._idle, self._expire = idle, expire
        self._lock = threading.Lock()
        self._since: float | None = None  # when the wait for the current message began
        self._timer: threading.Timer | None = None
        self.fired = False

    def waiting(self, now_waiting: bool) -> None:
        with self._lock:
            self._since = time.monotonic() if now_waiting else None
            if now_waiting and self._timer is None:
                self._arm(self._idle)

    def _arm(self, delay: float) -> None:
        self._timer = threading.Timer(delay, self._wake)
        self._timer.daemon = True
        self._timer.start()

    def _wake(self) -> None:
        with self._lock:
            self._timer = None
            if self._since is None:
                return  # not waiting: the next wait arms it again
            left = self._since + self._idle - time.monotonic()
            if left > 0:
                self._arm(left)
                return
            self.fired = True
        self._expire()

    def stop(self) -> None:
        with self._lock:
            self._since = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None


def write_requests(resource: str, source, digest: Digest, failure: list) -> Iterator[bs_pb2.WriteRequest]:
    """The requests streaming ``source`` (a binary file) as the blob ``digest``.  On a mismatch a note
    goes into ``failure`` and the stream ends without finishing the write (an exception raised here
    would be logged by gRPC with a traceback, and lost)."""
    size, offset, sha = digest[1], 0, hashlib.sha256()
    chunk = source.read(min(CHUNK, size + 1))
    while True:
        following = source.read(CHUNK) if chunk else b""
        sha.update(chunk)
        last = not following
        if offset + len(chunk) > size or (last and (offset + len(chunk) != size
                                                     or "sha256:" + sha.hexdigest() != digest[0])):
            failure.append(f"not {digest[0]}")
            return
        yield bs_pb2.WriteRequest(resource_name=resource if offset == 0 else "", write_offset=offset,
                                  data=chunk, finish_write=last)
        offset += len(chunk)
        chunk = following
        if last:
            return
