"""`irctl worker` end to end: a BuildGrid server on loopback, worker processes with their own cache
dirs, and Execute requests sent straight through the REAPI client with envelopes made by the client's
own encoder (``backend.farm.step``) — so what is tested is the worker, not the build's wiring."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from ir import ops

from backend.farm.results import decode_result
from backend.farm.step import RemoteStep, step_action
from backend.oci.pull import RemoteLayer
from backend.reapi.address import parse_endpoint
from backend.reapi.client import Remote
from tests.support.baseimage import PATH_ENV, make_busybox_layout
from tests.support.buildgrid import start_worker

pytestmark = pytest.mark.e2e

SOME_INPUT = "sha256:" + "0" * 64  # the op's input ref: a worker reads its layers from the envelope, not the graph
KEY = "sha256:" + "1" * 64


@pytest.fixture(scope="module")
def base(buildgrid, tmp_path_factory) -> tuple[str, RemoteLayer]:
    """The busybox image's one layer in the server's CAS, as a client describes a base image's layer."""
    layout = make_busybox_layout(tmp_path_factory.mktemp("bb") / "layout")
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_bytes())
    config = json.loads((blobs / manifest["config"]["digest"][7:]).read_bytes())
    layer = manifest["layers"][0]
    diff_id = config["rootfs"]["diff_ids"][0]
    remote = client(buildgrid.url)
    try:
        remote.upload_bytes((blobs / layer["digest"][7:]).read_bytes())
    finally:
        remote.close()
    return diff_id, RemoteLayer(layer["digest"], layer["mediaType"], layer["size"], diff_id, "")


def client(url: str) -> Remote:
    return Remote(parse_endpoint(url, "--remote")[0])


def exec_step(base, script: str, *, network: str = "none", mounts: tuple[ops.Mount, ...] = (),
              description: str = "RUN test", **exec_fields) -> RemoteStep:
    diff_id, layer = base
    op = ops.Op(inputs=(ops.Ref(SOME_INPUT),), exec=ops.ExecOp(
        args=("sh", "-c", script), env=(PATH_ENV,), mounts=(ops.Mount("/", input=0, output=0), *mounts),
        **exec_fields))
    return RemoteStep(op, ((diff_id,),), {diff_id: layer}, network, description, KEY)


def execute(remote, step: RemoteStep | None = None, *, blobs: dict | None = None, action=None):
    """Upload the step's blobs and Execute its action (no cache lookup: every call runs)."""
    if step is not None:
        action, blobs = step_action(step)
    missing = remote.find_missing(list(blobs))
    for digest, data in blobs.items():
        if digest in missing:
            remote.upload_bytes(data)
    return remote.execute(action, skip_cache_lookup=True)


def layer_files(remote, layer: RemoteLayer) -> dict[str, bytes]:
    data = gzip.decompress(remote.read_bytes((layer.blob, layer.size), cap=64 << 20))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


@pytest.fixture(scope="module")
def worker(buildgrid, tmp_path_factory):
    """One worker for the module's tests (its log: ``worker.log``)."""
    proc = start_worker(buildgrid.url, tmp_path_factory.mktemp("w1") / "cache", "w1")
    yield proc
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def log_of(proc) -> str:
    return Path(proc.log_path).read_text()


def test_a_worker_runs_an_exec_step_and_returns_its_layer(buildgrid, base, worker):
    remote = client(buildgrid.url)
    try:
        response = execute(remote, exec_step(base, "echo hello from $(hostname) > /out; echo printed"))
        assert response.status.code == 0, response.status.message
        result = response.result
        assert result.exit_code == 0 and result.execution_metadata.worker == "w1"
        assert result.stdout_raw == b"printed\n"
        outputs, layers = decode_result(remote, result)
        assert len(outputs) == 1 and outputs[0].layers[0] == base[0] and len(outputs[0].layers) == 2
        made = outputs[0].layers[1]
        assert outputs[0].created[0] is None and outputs[0].created[1] > 0
        assert layer_files(remote, layers[made]) == {"out": b"hello from buildkitsandbox\n"}
    finally:
        remote.close()
    assert "RUN test: done in" in log_of(worker)
