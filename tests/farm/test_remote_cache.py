"""``--remote-cache`` end to end against a real REAPI server (BuildGrid): two "machines" (two
``--cache-dir``) sharing one action cache and CAS, and what such a cache must survive (an
unreachable server, a result whose layer blob is another one, a malformed result.json, a secret
value copied into a layer): each is a warning and a build that still succeeds with the right files.

Which RUN steps executed is read from ``--progress plain`` (``#N DONE`` for a step that ran, ``#N
CACHED`` for a hit); image digests from the OCI archive ``-o type=oci`` writes (SOURCE_DATE_EPOCH is
set, so equal inputs give equal images).  The tests write to the server with the client itself
(``backend.reapi.client``) to play a hostile or broken cache."""

from __future__ import annotations

import gzip
import io
import json
import socket
import tarfile
from pathlib import Path

import pytest

from backend.farm.results import cache_action, decode_result, encode_result
from backend.reapi.address import parse_endpoint
from backend.reapi.client import Remote
from tests.support.cli import Result, irctl, write
from tests.support.reapicache import ENV, keys, ran, rewrite, steps, uploaded, warnings

pytestmark = pytest.mark.e2e

STEPS = """\
FROM base
ARG TAG
COPY a.txt /a.txt
RUN echo "$TAG" > /tag && wc -c < /a.txt > /len
RUN cat /len /tag > /final
"""
CUTOFF = """\
FROM base AS count
COPY a.txt /a.txt
RUN wc -c < /a.txt > /len
FROM base
COPY --from=count /len /len
RUN cat /len > /final
"""


def build(ctx: Path, machine: Path, layout: Path, *args: str, out: Path | None = None, code: int = 0) -> Result:
    extra = ["-o", f"type=oci,dest={out}"] if out is not None else []
    r = irctl("build", "--progress", "plain", "--cache-dir", machine, "--build-context",
              f"base=oci-layout://{layout}", *extra, *args, ctx, env=ENV)
    assert r.code == code, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    return r


def image_digest(archive: Path) -> str:
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    return index["manifests"][0]["digest"]


@pytest.fixture
def ctx(tmp_path: Path, request) -> Path:
    """A build context whose steps no other test makes (the server is shared)."""
    return write(tmp_path / "ctx", {"Dockerfile": STEPS.replace("ARG TAG", f"ARG TAG={request.node.name}"),
                                    "a.txt": f"{request.node.name}\n"})


@pytest.fixture
def reapi_cache(buildgrid) -> str:
    """The session's BuildGrid (tests/support/buildgrid.py): each test's steps are its own."""
    return buildgrid.url


@pytest.fixture
def client(reapi_cache: str):
    remote = Remote(parse_endpoint(reapi_cache, "test")[0])
    yield remote
    remote.close()


def test_a_second_machine_runs_nothing_and_exports_the_same_image(tmp_path, ctx, busybox_layout, reapi_cache, client):
    a = build(ctx, tmp_path / "A", busybox_layout, "--remote-cache", reapi_cache, out=tmp_path / "a.tar")
    assert len(ran(a.stderr)) == 3, a.stderr  # COPY and both RUN steps ran
    # (and the image config step: four results, every key the build filed)
    assert f"remote cache {reapi_cache}: 4 results uploaded" in a.stderr, a.stderr
    assert uploaded(client, tmp_path / "A").keys() == set(keys(tmp_path / "A")) and len(keys(tmp_path / "A")) == 4
    b = build(ctx, tmp_path / "B", busybox_layout, "--remote-cache", reapi_cache, out=tmp_path / "b.tar")
    assert ran(b.stderr) == [], b.stderr  # machine B executed nothing ...
    assert set(steps(b.stderr).values()) == {"CACHED"}, b.stderr
    assert f"cache {reapi_cache}: 4 steps imported" in b.stderr, b.stderr
    assert image_digest(tmp_path / "b.tar") == image_digest(tmp_path / "a.tar")  # ... and made the same image
    assert not warnings(b.stderr), b.stderr


def test_early_cutoff_across_machines(tmp_path, busybox_layout, reapi_cache):
    ctx = write(tmp_path / "ctx", {"Dockerfile": CUTOFF, "a.txt": "1\n"})
    build(ctx, tmp_path / "A", busybox_layout, "--remote-cache", reapi_cache)
    (ctx / "a.txt").write_text("2\n")  # another file of the same length: the count stage makes the same /len
    b = build(ctx, tmp_path / "B", busybox_layout, "--remote-cache", reapi_cache)
    assert steps(b.stderr) == {"COPY a.txt /a.txt": "DONE", "RUN wc -c < /a.txt > /len": "DONE",
                               "COPY --from=count /len /len": "CACHED", "RUN cat /len > /final": "CACHED"}, b.stderr
    assert f"cache {reapi_cache}: 3 steps imported" in b.stderr, b.stderr  # (and the image config)
    (ctx / "b.txt").write_text("a file no step reads\n")  # the context changes, what COPY selects does not
    c = build(ctx, tmp_path / "C", busybox_layout, "--remote-cache", reapi_cache)
    assert ran(c.stderr) == [], c.stderr


def test_an_unreachable_server_is_a_warning_and_a_local_build(tmp_path, ctx, busybox_layout):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"grpc://127.0.0.1:{s.getsockname()[1]}"
    r = build(ctx, tmp_path / "A", busybox_layout, "--remote-cache", url)
    assert warnings(r.stderr) == [f"=> warning: --remote-cache {url}: cannot reach the server (connection refused); "
                                  "building locally"], r.stderr
    assert len(ran(r.stderr)) == 3, r.stderr


def test_upload_false_writes_nothing(tmp_path, ctx, busybox_layout, reapi_cache, client):
    a = build(ctx, tmp_path / "A", busybox_layout, "--remote-cache", f"{reapi_cache},upload=false")
    assert len(ran(a.stderr)) == 3 and "uploaded" not in a.stderr, a.stderr
    assert uploaded(client, tmp_path / "A") == {}  # every step's action misses on the server
    b = build(ctx, tmp_path / "B", busybox_layout, "--remote-cache", reapi_cache)
    assert len(ran(b.stderr)) == 3, b.stderr


def test_a_layer_blob_that_is_another_layer_is_refused(tmp_path, ctx, busybox_layout, reapi_cache, client):
    build(ctx, tmp_path / "A", busybox_layout, "--remote-cache", reapi_cache, out=tmp_path / "a.tar")
    other = io.BytesIO()  # a well-formed layer, of other files: its blob hashes to its own digest
    with tarfile.open(fileobj=other, mode="w") as tar:
        info = tarfile.TarInfo("final")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    blob = gzip.compress(other.getvalue(), mtime=0)
    bogus = client.upload_bytes(blob)
    for key, result in uploaded(client, tmp_path / "A").items():
        outputs, layers = decode_result(client, result)
        swapped = {lid: type(x)(bogus[0], x.media_type, bogus[1], x.diff_id, x.variant) for lid, x in layers.items()}
        result, blobs = encode_result(outputs, swapped)
        for data in blobs.values():
            client.upload_bytes(data)
        client.update_action_result(cache_action(key)[0], result)
    b = build(ctx, tmp_path / "B", busybox_layout, "--remote-cache", reapi_cache, out=tmp_path / "b.tar")
    said = warnings(b.stderr)
    assert len(said) == 1 and f"its blob {bogus[0]} unpacks to" in said[0] and said[0].endswith(
        "building on without it"), b.stderr
    assert len(ran(b.stderr)) == 3, b.stderr  # every step built here ...
    assert image_digest(tmp_path / "b.tar") == image_digest(tmp_path / "a.tar")  # ... into the right image


@pytest.mark.parametrize("doc", [
    b'{"format":"irctl.result.v1","outputs":"all of them","layers":{}}',
    b'{"format":"irctl.result.v1","outputs":[{"identity":1,"layers":[],"created":[]}],"layers":{}}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"format":"irctl.result.v1","pad":"' + b"x" * (4 << 20) + b'"}',
], ids=["wrong-type", "wrong-identity", "deep", "huge"])
def test_a_malformed_result_is_a_miss_with_a_warning(tmp_path, ctx, busybox_layout, reapi_cache, client, doc):
    build(ctx, tmp_path / "A", busybox_layout, "--remote-cache", f"{reapi_cache},upload=false")
    for key in keys(tmp_path / "A"):
        rewrite(client, key, doc)
    b = build(ctx, tmp_path / "B", busybox_layout, "--remote-cache", reapi_cache)
    said = warnings(b.stderr)
    assert said and all("is unusable (" in w and w.endswith("; running that step here") for w in said), b.stderr
    assert len(ran(b.stderr)) == 3, b.stderr


def test_a_layer_holding_a_secret_value_is_never_uploaded(tmp_path, busybox_layout, reapi_cache, client):
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM base\nRUN --mount=type=secret,id=tok cp /run/secrets/tok "
                                                 "/leaked\nRUN echo after > /after\n"})
    env_secret = ("--secret", "id=tok,env=IRCTL_TEST_TOKEN")
    r = irctl("build", "--progress", "plain", "--cache-dir", tmp_path / "A", "--build-context",
              f"base=oci-layout://{busybox_layout}", *env_secret, "--remote-cache", reapi_cache, ctx,
              env={**ENV, "IRCTL_TEST_TOKEN": f"s3cret-{tmp_path.name}"})
    assert r.code == 0, r.stderr
    said = warnings(r.stderr)
    assert len(said) == 1 and "a secret value of this build into its layer" in said[0], r.stderr  # (said once)
    assert uploaded(client, tmp_path / "A") == {}  # neither the step nor the one on top of its layer


def test_a_cache_to_carries_what_the_server_gave(tmp_path, busybox_layout, reapi_cache):
    side = ("FROM base AS side\nRUN echo {name} > /side\nFROM base\n"
            "RUN --mount=type=bind,from=side,target=/m cat /m/side > /got\n")
    ctx = write(tmp_path / "ctx", {"Dockerfile": side.format(name=tmp_path.name)})
    build(ctx, tmp_path / "A", busybox_layout, "--remote-cache", reapi_cache)
    shared = tmp_path / "shared"  # B never fetches the side stage's layer: --cache-to fetches it from the server
    b = build(ctx, tmp_path / "B", busybox_layout, "--remote-cache", reapi_cache,
              "--cache-to", f"type=local,dest={shared},mode=max")
    assert ran(b.stderr) == [] and "warning" not in b.stderr, b.stderr
    assert "(mode=max): 3 results (3 with their layers), 2 layers;" in b.stderr, b.stderr
    c = build(ctx, tmp_path / "C", busybox_layout, "--cache-from", f"type=local,src={shared}")
    assert ran(c.stderr) == [] and "warning" not in c.stderr, c.stderr
