"""How ``--remote-cache`` meets a server it cannot fully use (``backend.farm.cache``), with a stand-in
for the client: one that refuses action cache updates is read only, one without SHA256 is not used,
one that fails mid-build is said once and then left alone, a result it lost is one miss; and the
option's spelling (the CLI)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from backend.farm import FarmOptions
from backend.farm import cache as farm_cache
from backend.reapi.address import parse_endpoint
from backend.reapi.client import Caps
from backend.farm.results import RESULT_PATH
from backend.reapi.digests import to_proto
from backend.reapi.errors import BlobNotFound, RemoteError, Unreachable
from backend.reapi.protos import remote_execution_pb2 as pb
from tests.support.cli import irctl, write

URL = "grpc://127.0.0.1:9"
KEY = "sha256:" + "1" * 64


class FakeRemote:
    """What ``connect`` and ``ReapiCache`` call, answering as told; counts the calls."""

    caps: Caps | Exception = Caps(exec_enabled=False, ac_update=True, max_batch=4 << 20, digest_ok=True)
    lookup: object = None

    def __init__(self, endpoint) -> None:
        self.endpoint, self.closed, self.lookups = endpoint, False, 0

    def capabilities(self) -> Caps:
        if isinstance(self.caps, Exception):
            raise self.caps
        return self.caps

    def get_action_result(self, action):
        self.lookups += 1
        if isinstance(self.lookup, Exception):
            raise self.lookup
        return self.lookup

    def close(self) -> None:
        self.closed = True


def _connect(monkeypatch, **answers):
    monkeypatch.setattr(farm_cache, "Remote", type("Remote", (FakeRemote,), answers))
    said: list[str] = []
    found = farm_cache.connect(FarmOptions(cache=parse_endpoint(URL, "--remote-cache")[0]), SimpleNamespace(),
                               lambda event: said.append(event.text))
    return found, said


def test_a_server_refusing_updates_is_read_only(monkeypatch) -> None:
    found, said = _connect(monkeypatch, caps=Caps(exec_enabled=False, ac_update=False, max_batch=1, digest_ok=True))
    assert said == [f"warning: --remote-cache {URL}: the server refuses action cache updates; reading only"]
    assert found is not None and not found.upload
    found.ran(KEY, ())  # nothing to upload to: no pool, no error
    found.close()


@pytest.mark.parametrize("error, text", [
    (Unreachable(URL, "cannot reach it (connection refused)"), "cannot reach the server (connection refused)"),
    (RemoteError(URL, "does not offer the SHA256 digest function (it offers MD5)"),
     "does not offer the SHA256 digest function (it offers MD5)"),
])
def test_a_server_that_cannot_serve_leaves_the_build_local(monkeypatch, error, text) -> None:
    found, said = _connect(monkeypatch, caps=error)
    assert found is None
    assert said == [f"warning: --remote-cache {URL}: {text}; building locally"]


def test_a_server_failing_mid_build_is_said_once(monkeypatch) -> None:
    found, said = _connect(monkeypatch, lookup=RemoteError(URL, "GetActionResult: internal server error"))
    assert found.lookup(KEY) is None and found.lookup(KEY) is None
    assert said == [f"warning: --remote-cache {URL}: GetActionResult: internal server error; looking nothing more "
                    "up there"]
    assert found.remote.lookups == 1  # not asked again
    found.close()
    assert found.remote.closed


@pytest.mark.parametrize("value, error", [
    ("grpc://127.0.0.1", "the port is missing"),
    ("http://127.0.0.1:80", "expected grpc://HOST:PORT or grpcs://HOST:PORT"),
    (f"{URL},uplaod=false", "unknown option 'uplaod' (did you mean upload?)"),
    (f"{URL},upload=no", "upload='no': expected true or false"),
])
def test_a_malformed_value_is_one_line_before_anything_runs(tmp_path, value, error) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM scratch\n"})
    r = irctl("build", "--cache-dir", tmp_path / "cache", "--remote-cache", value, ctx)
    assert r.code != 0 and error in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr


def test_a_result_whose_document_the_server_lost_is_one_miss(monkeypatch) -> None:
    result = pb.ActionResult(output_files=[pb.OutputFile(path=RESULT_PATH, digest=to_proto(("sha256:" + "2" * 64, 9)))])

    def read_bytes(self, digest, *, cap):
        raise BlobNotFound(URL, f"blob {digest[0]} is not in the CAS")

    monkeypatch.setattr(FakeRemote, "read_bytes", read_bytes, raising=False)
    found, said = _connect(monkeypatch, lookup=result)
    assert found.lookup(KEY) is None and found.lookup(KEY) is None
    assert found.remote.lookups == 2  # the server is still asked: only that result is unusable
    assert len(said) == 2 and all("is not in the CAS); running that step here" in s for s in said), said
    found.close()
