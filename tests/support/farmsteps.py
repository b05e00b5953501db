"""Exec steps sent to a REAPI server straight through the client, as a build client sends them
(``backend.farm.step``'s encoder), for tests of what runs them: the busybox base layer, a step on it,
and Execute.  What is tested with these is the worker, not a build's wiring."""

from __future__ import annotations

import json
from pathlib import Path

from ir import ops

from backend.farm.step import RemoteStep, step_action
from backend.oci.pull import RemoteLayer
from backend.reapi.address import parse_endpoint
from backend.reapi.client import Remote
from tests.support.baseimage import PATH_ENV, make_busybox_layout

SOME_INPUT = "sha256:" + "0" * 64  # the op's input ref: a worker reads its layers from the envelope, not the graph
KEY = "sha256:" + "1" * 64

Base = tuple[str, RemoteLayer]  # the base layer's id and its blob


def busybox_layer(dest: Path) -> tuple[Path, Base]:
    """The busybox image's one layer (its image written under ``dest``): the blob file, and the layer
    as a client describes a base image's."""
    layout = make_busybox_layout(dest / "layout")
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_bytes())
    config = json.loads((blobs / manifest["config"]["digest"][7:]).read_bytes())
    layer = manifest["layers"][0]
    diff_id = config["rootfs"]["diff_ids"][0]
    return blobs / layer["digest"][7:], (diff_id, RemoteLayer(layer["digest"], layer["mediaType"], layer["size"],
                                                              diff_id, ""))


def client(url: str) -> Remote:
    return Remote(parse_endpoint(url, "--remote")[0])


def upload_base(url: str, busybox: tuple[Path, Base]) -> Base:
    """The base layer in the CAS of the server at ``url``."""
    path, base = busybox
    with client(url) as remote:
        remote.upload_file(path, (base[1].blob, base[1].size))
    return base


def exec_step(base: Base, script: str, *, network: str = "none", mounts: tuple[ops.Mount, ...] = (),
              description: str = "RUN test", **exec_fields) -> RemoteStep:
    """``sh -c script`` on the busybox base; ``network``: the envelope's, ``exec_fields``: the op's own."""
    diff_id, layer = base
    op = ops.Op(inputs=(ops.Ref(SOME_INPUT),), exec=ops.ExecOp(
        args=("sh", "-c", script), env=(PATH_ENV,), mounts=(ops.Mount("/", input=0, output=0), *mounts),
        **exec_fields))
    return RemoteStep(op, ((diff_id,),), {diff_id: layer}, network, description, KEY)


def execute(remote, step: RemoteStep | None = None, *, blobs: dict | None = None, action=None):
    """Upload the step's blobs (or ``blobs``) and Execute its action (``action``) without a cache
    lookup: every call runs."""
    if step is not None:
        action, blobs = step_action(step)
    assert blobs is not None and action is not None
    missing = remote.find_missing(list(blobs))
    remote.upload_blobs({d: data for d, data in blobs.items() if d in missing})
    return remote.execute(action, skip_cache_lookup=True)
