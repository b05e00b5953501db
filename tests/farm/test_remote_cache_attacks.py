"""Attacks on ``--remote-cache`` by whoever controls the server (or can write its action cache), and
by a server that misbehaves: each is a miss, a warning or a bounded wait, never a traceback, a hang
or a poisoned local store (``backend.farm``)."""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import pytest

from backend.farm import FarmOptions
from backend.farm import cache as farm_cache
from backend.farm.results import ResultError, parse_document
from backend.reapi.address import parse_endpoint
from backend.reapi.client import Caps
from backend.reapi.errors import RemoteError
from backend.store.records import Output

URL = "grpc://127.0.0.1:9"
LID, BLOB, DIFF, IDENT = ("sha256:" + c * 64 for c in "3456")


def _doc(created=None, size=812) -> bytes:
    return json.dumps({"format": "irctl.result.v1",
                       "outputs": [{"identity": IDENT, "layers": [LID], "created": [created]}],
                       "layers": {LID: {"blob": BLOB, "size": size, "diff_id": DIFF, "variant": "sde=None",
                                        "media_type": "application/vnd.oci.image.layer.v1.tar+gzip"}}}).encode()


@pytest.mark.parametrize("data", [_doc(created=10 ** 30), _doc(created=1 << 63), _doc(size=1 << 70)],
                         ids=["created-past-any-clock", "created-past-int64", "size-past-int64"])
def test_a_time_or_size_no_machine_can_hold_is_a_result_error(data: bytes) -> None:
    """A step time the export cannot write (``datetime`` overflows: a traceback at export, and in the
    local store for every later build) or a size REAPI cannot carry is refused with the result."""
    with pytest.raises(ResultError):
        parse_document(data)


def test_the_largest_time_a_clock_shows_is_taken() -> None:
    outputs, _ = parse_document(_doc(created=(1 << 63) - 1))
    assert outputs == [Output(IDENT, (LID,), None, ((1 << 63) - 1,))]


class HangingRemote:
    """A server whose FindMissingBlobs answers after its deadline, as an error: every upload fails."""

    def __init__(self, endpoint) -> None:
        self.endpoint, self.asked, self._lock = endpoint, 0, threading.Lock()

    def capabilities(self) -> Caps:
        return Caps(exec_enabled=False, ac_update=True, max_batch=4 << 20, digest_ok=True)

    def find_missing(self, digests):
        with self._lock:
            self.asked += 1
        time.sleep(0.3)  # (the client's deadline, shortened)
        raise RemoteError(URL, "FindMissingBlobs: timed out")

    def close(self) -> None:
        pass


def test_uploads_queued_before_a_failure_are_not_tried_after_it(monkeypatch) -> None:
    """A server that times out every upload costs one deadline per uploader, not one per step that
    ran before the first failure was seen (the build waits for its uploads at the end)."""
    monkeypatch.setattr(farm_cache, "Remote", HangingRemote)
    said: list[str] = []
    ws = SimpleNamespace(redactor=None)
    found = farm_cache.connect(FarmOptions(cache=parse_endpoint(URL, "--remote-cache")[0]), ws,
                               lambda event: said.append(event.text))
    assert found is not None
    for i in range(12):  # twelve steps ran quickly, before the first upload failed
        found.ran("sha256:" + f"{i:064x}", ())
    started = time.monotonic()
    found.close()
    assert found.remote.asked <= farm_cache.UPLOADERS, found.remote.asked
    assert time.monotonic() - started < 12 * 0.3 / farm_cache.UPLOADERS
    assert said == [f"warning: --remote-cache {URL}: uploading a result failed (FindMissingBlobs: timed out); "
                    "uploading nothing more"]


@pytest.mark.e2e
@pytest.mark.parametrize("step", ['ln -s "$(cat /run/secrets/tok)" /leaked', 'touch "/$(cat /run/secrets/tok)"',
                                  'mkdir -p "/d/x$(cat /run/secrets/tok)y"'],
                         ids=["link-target", "file-name", "dir-name"])
def test_a_secret_value_in_a_link_or_a_name_is_never_uploaded(tmp_path, busybox_layout, buildgrid, step):
    """A layer's tar carries link targets and names as well as file contents: a secret value in
    either would reach every reader of the server's CAS."""
    from backend.reapi.client import Remote
    from tests.support.reapicache import ENV, uploaded, warnings
    from tests.support.cli import irctl, write

    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM base\nRUN --mount=type=secret,id=tok {step}\n"
                                                 "RUN echo after > /after\n"})
    r = irctl("build", "--progress", "plain", "--cache-dir", tmp_path / "A", "--build-context",
              f"base=oci-layout://{busybox_layout}", "--secret", "id=tok,env=IRCTL_TEST_TOKEN",
              "--remote-cache", buildgrid.url, ctx, env={**ENV, "IRCTL_TEST_TOKEN": f"s3cret-{tmp_path.name}"})
    assert r.code == 0 and "Traceback" not in r.stderr, r.stderr
    said = warnings(r.stderr)
    assert len(said) == 1 and "a secret value of this build into its layer" in said[0], r.stderr
    with Remote(parse_endpoint(buildgrid.url, "test")[0]) as client:
        assert uploaded(client, tmp_path / "A") == {}


@pytest.mark.e2e
@pytest.mark.parametrize("upload", [False, True])
def test_upload_false_calls_nothing_that_writes(tmp_path, busybox_layout, upload):
    """Every RPC a read-only build makes, recorded by the server: only capabilities and lookups
    (with upload=true the same build does write, so the recording sees writes)."""
    import grpc

    from backend.reapi.protos import remote_execution_pb2 as pb
    from tests.support.reapicache import ENV, ran
    from tests.reapi.fakeserver import FakeServer
    from tests.support.cli import irctl, write

    def caps(request, context):
        return pb.ServerCapabilities(cache_capabilities=pb.CacheCapabilities(
            digest_functions=[pb.DigestFunction.SHA256],
            action_cache_update_capabilities=pb.ActionCacheUpdateCapabilities(update_enabled=True)))

    def miss(request, context):
        context.abort(grpc.StatusCode.NOT_FOUND, "no such result")

    server = FakeServer(GetCapabilities=caps, GetActionResult=miss)
    try:
        ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM base\nCOPY a.txt /a\nRUN cat /a > /b\n", "a.txt": "a\n"})
        r = irctl("build", "--progress", "plain", "--cache-dir", tmp_path / "A", "--build-context",
                  f"base=oci-layout://{busybox_layout}", "--remote-cache",
                  f"{server.url},upload={str(upload).lower()}", ctx, env=ENV)
    finally:
        server.stop()
    assert r.code == 0 and "Traceback" not in r.stderr, r.stderr
    assert len(ran(r.stderr)) == 2, r.stderr
    assert server.calls.count("GetActionResult") >= 2, server.calls
    writes = set(server.calls) - {"GetCapabilities", "GetActionResult"}
    assert bool(writes) == upload, server.calls


@pytest.mark.e2e
def test_a_secret_in_a_layer_another_cache_gave_is_never_uploaded(tmp_path, busybox_layout, buildgrid):
    """A --cache-from cache an earlier build with the same secret wrote (it warned) holds a layer
    with the value; this build takes that step from it and runs the one on top, whose result names
    the layer: a private cache's layer must not go on to a shared server's CAS."""
    from backend.reapi.client import Remote
    from tests.support.reapicache import ENV, ran, uploaded, warnings
    from tests.support.cli import irctl, write

    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM base\nRUN --mount=type=secret,id=tok cp /run/secrets/tok "
                                                 "/leaked\nARG X\nRUN echo $X > /after\n"})
    shared = tmp_path / "shared"
    common = ("--progress", "plain", "--build-context", f"base=oci-layout://{busybox_layout}",
              "--secret", "id=tok,env=IRCTL_TEST_TOKEN")
    env = {**ENV, "IRCTL_TEST_TOKEN": f"s3cret-{tmp_path.name}"}
    a = irctl("build", *common, "--cache-dir", tmp_path / "A", "--build-arg", "X=a",
              "--cache-to", f"type=local,dest={shared},mode=max", ctx, env=env)
    assert a.code == 0, a.stderr
    b = irctl("build", *common, "--cache-dir", tmp_path / "B", "--build-arg", "X=b",
              "--cache-from", f"type=local,src={shared}", "--remote-cache", buildgrid.url, ctx, env=env)
    assert b.code == 0 and "Traceback" not in b.stderr, b.stderr
    assert ran(b.stderr) == ["RUN echo b > /after"], b.stderr  # the secret's step came from the cache
    said = warnings(b.stderr)
    assert len(said) == 1 and "a secret value of this build into its layer" in said[0], b.stderr
    with Remote(parse_endpoint(buildgrid.url, "test")[0]) as client:
        assert uploaded(client, tmp_path / "B") == {}


class SlowRemote(HangingRemote):
    """A server that takes its time over each upload, and takes it."""

    def find_missing(self, digests):
        with self._lock:
            self.asked += 1
        time.sleep(0.3)
        return set()

    def update_action_result(self, action, result) -> None:
        pass


def test_a_cancelled_build_does_not_wait_for_uploads_not_begun(monkeypatch) -> None:
    """Ctrl-C: the solver closes the cache, which waits for its uploads; those queued and not begun
    are left (each would compress layers and wait on the network).  A build that fails still
    uploads what ran (``close()``: every one)."""
    monkeypatch.setattr(farm_cache, "Remote", SlowRemote)
    ws = SimpleNamespace(redactor=None)
    found = farm_cache.connect(FarmOptions(cache=parse_endpoint(URL, "--remote-cache")[0]), ws, lambda event: None)
    for i in range(12):
        found.ran("sha256:" + f"{i:064x}", ())
    started = time.monotonic()
    found.close(interrupted=True)
    assert found.remote.asked <= 2 * farm_cache.UPLOADERS, found.remote.asked  # (each upload asks twice)
    assert time.monotonic() - started < 12 * 0.6 / farm_cache.UPLOADERS
    monkeypatch.setattr(farm_cache, "Remote", SlowRemote)
    found = farm_cache.connect(FarmOptions(cache=parse_endpoint(URL, "--remote-cache")[0]), ws, lambda event: None)
    for i in range(4):
        found.ran("sha256:" + f"{i:064x}", ())
    found.close()
    assert found.uploaded == 4


@pytest.mark.e2e
def test_a_result_cannot_make_the_client_send_a_blob_it_holds(tmp_path, busybox_layout, fresh_buildgrid):
    """A writer of the action cache files, under a key the victim looks up, a result naming a layer
    of an image the victim pulled once for another build (a private one: its digests are known,
    its bytes are not), with that image's blob.  The victim takes the hit without reading it, runs
    a step on top (an image config step reads no layer), and uploads that step's result: the
    server says it lacks the blob it named, and the victim must not send its own copy."""
    from backend.ops.workspace import layers_identity
    from backend.reapi.client import Remote
    from tests.support.reapicache import ENV, keys, rewrite
    from tests.support.cli import irctl, write

    manifest = json.loads((busybox_layout / "index.json").read_text())["manifests"][0]["digest"]
    layer = json.loads((busybox_layout / "blobs" / "sha256" / manifest.removeprefix("sha256:")).read_text())["layers"][0]
    private = (layer["digest"], layer["size"])
    config = json.loads((busybox_layout / "blobs" / "sha256" / json.loads(
        (busybox_layout / "blobs" / "sha256" / manifest.removeprefix("sha256:")).read_text())["config"]["digest"]
        .removeprefix("sha256:")).read_text())
    diff_id = config["rootfs"]["diff_ids"][0]

    def build(machine, dockerfile, *args):
        ctx = write(tmp_path / f"ctx-{machine}", {"Dockerfile": dockerfile, "a.txt": "a\n"})
        r = irctl("build", "--progress", "plain", "--cache-dir", tmp_path / machine, "--build-context",
                  f"base=oci-layout://{busybox_layout}", *args, ctx, env=ENV)
        assert r.code == 0 and "Traceback" not in r.stderr, r.stderr
        return r

    build("V", "FROM base\nRUN true\n")  # the victim once built on the private image
    victim = "FROM scratch\nCOPY a.txt /a\nENV A=1\n"
    build("T", victim, "--remote-cache", f"{fresh_buildgrid.url},upload=false")  # the attacker's dry run: keys
    poison = json.dumps({"format": "irctl.result.v1",
                         "outputs": [{"identity": layers_identity([diff_id]), "layers": [diff_id], "created": [None]}],
                         "layers": {diff_id: {"blob": private[0], "size": private[1], "diff_id": diff_id,
                                              "media_type": layer["mediaType"], "variant": ""}}},
                        sort_keys=True, separators=(",", ":")).encode()
    with Remote(parse_endpoint(fresh_buildgrid.url, "test")[0]) as server:
        for key in keys(tmp_path / "T"):
            rewrite(server, key, poison)
        build("V", victim, "--remote-cache", fresh_buildgrid.url)
        assert server.find_missing({private}) == {private}, "the victim sent the private image's blob"
        # the hit is in the victim's own store now: a later build takes it from there, and runs
        # another step on top; no image of that build names the private layer either
        build("V", victim.replace("A=1", "A=2"), "--remote-cache", fresh_buildgrid.url)
        assert server.find_missing({private}) == {private}, "a later build sent the private image's blob"
