"""Digests in irctl's spelling, converted at the edge; a server's digest is checked before use."""

from __future__ import annotations

import hashlib

import pytest

from backend.reapi import digests
from backend.reapi.digests import EMPTY, DigestError, check, digest_of, from_proto, message_digest, to_proto
from backend.reapi.protos import remote_execution_pb2 as pb


def test_a_digest_round_trips_through_the_protocol_spelling():
    d = digest_of(b"hello")
    assert d == ("sha256:" + hashlib.sha256(b"hello").hexdigest(), 5)
    assert to_proto(d) == pb.Digest(hash=hashlib.sha256(b"hello").hexdigest(), size_bytes=5)
    assert from_proto(to_proto(d)) == d
    assert EMPTY == ("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", 0)


@pytest.mark.parametrize("hash_, size", [
    ("E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", 0),  # upper case
    ("e3b0c442", 0),  # short
    ("../../etc/passwd" + "0" * 48, 0),  # a path
    ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", -1),
    ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n", 0),
    ("\x1b[2J" + "0" * 60, 1),
])
def test_a_servers_malformed_digest_is_refused(hash_, size):
    with pytest.raises(DigestError) as e:
        from_proto(pb.Digest(hash=hash_, size_bytes=size))
    assert "\x1b" not in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("bad", [("sha512:" + "0" * 64, 1), ("sha256:" + "0" * 64, True), ("x", 1), "sha256:",
                                 ("sha256:" + "0" * 64, 1 << 63)])
def test_a_callers_malformed_digest_is_refused(bad):
    with pytest.raises(DigestError):
        check(bad)


def test_a_message_is_hashed_as_its_deterministic_bytes():
    command = pb.Command(arguments=["irctl-step", "v1", "sha256:" + "a" * 64])
    data, d = message_digest(command)
    assert data == command.SerializeToString(deterministic=True)
    assert d == digest_of(data) and pb.Command.FromString(data) == command
    assert digests.hex_of(d) == d[0][len("sha256:"):]
