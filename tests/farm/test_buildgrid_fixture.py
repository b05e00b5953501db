"""The BuildGrid fixtures every farm test stands on: the server answers, is REAPI v2 with SHA-256 and
remote execution, accepts action-cache updates, listens on loopback only, and a fresh one is empty."""

from __future__ import annotations

import json
import subprocess

from tests.support.buildgrid import BGD, listening_sockets

LOOPBACK = ("127.0.0.1:", "[::ffff:127.0.0.1]:")


def _capabilities(url: str) -> dict:
    """Asked with BuildGrid's own client, not irctl's: the fixture is checked independently of the code
    under test."""
    done = subprocess.run([str(BGD), "capabilities", "--remote", url.replace("grpc://", "http://")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_server_answers_get_capabilities(buildgrid):
    caps = _capabilities(buildgrid.url)
    assert caps["cacheCapabilities"]["digestFunctions"] == ["SHA256"]
    assert caps["cacheCapabilities"]["actionCacheUpdateCapabilities"]["updateEnabled"] is True
    assert caps["executionCapabilities"]["execEnabled"] is True
    assert caps["highApiVersion"]["major"] == 2


def test_nothing_listens_beyond_loopback(buildgrid):
    postmaster = buildgrid.cluster.postmaster_pid()
    assert postmaster is not None
    for pid, expected_port in ((buildgrid.process.pid, buildgrid.port), (postmaster, buildgrid.cluster.port)):
        addresses = listening_sockets(pid)
        assert any(a.endswith(f":{expected_port}") for a in addresses), addresses  # the scan sees sockets
        assert all(a.startswith(LOOPBACK) for a in addresses), addresses


def test_fresh_server_is_an_empty_one_of_its_own(buildgrid, fresh_buildgrid):
    assert (fresh_buildgrid.url, fresh_buildgrid.database) != (buildgrid.url, buildgrid.database)
    blob = f"fixture probe for {fresh_buildgrid.url}".encode()
    assert _cas_probe(buildgrid.url, blob) == {"missing_before": True, "missing_after": False}
    assert _cas_probe(fresh_buildgrid.url, blob, upload=False) == {"missing_before": True, "missing_after": True}


# FindMissingBlobs, then BatchUpdateBlobs, then FindMissingBlobs again, with BuildGrid's own protos.
PROBE = """
import hashlib, json, sys, grpc
from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re, remote_execution_pb2_grpc as rg
target, blob, upload = sys.argv[1], sys.argv[2].encode(), sys.argv[3] == "1"
digest = re.Digest(hash=hashlib.sha256(blob).hexdigest(), size_bytes=len(blob))
cas = rg.ContentAddressableStorageStub(grpc.insecure_channel(target))
missing = lambda: bool(cas.FindMissingBlobs(re.FindMissingBlobsRequest(blob_digests=[digest]), timeout=30).missing_blob_digests)
before = missing()
if upload:
    cas.BatchUpdateBlobs(re.BatchUpdateBlobsRequest(requests=[re.BatchUpdateBlobsRequest.Request(digest=digest, data=blob)]), timeout=30)
print(json.dumps({"missing_before": before, "missing_after": missing()}))
"""


def _cas_probe(url: str, blob: bytes, upload: bool = True) -> dict:
    done = subprocess.run([str(BGD.parent / "python"), "-c", PROBE, url.removeprefix("grpc://"), blob.decode(),
                           "1" if upload else "0"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)
