"""Image op: the input filesystem plus an image config, history and platform (``ImageMeta``).

The config is converted once to the OCI ``config`` object an exporter writes; the identity covers
it, so two images with the same files but different configs are different results.
"""

from __future__ import annotations

import hashlib
import json

from ir import ops as irops

from backend.ops.handler import OpHandler
from backend.ops.workspace import Step, Workspace
from backend.result import ImageMeta, Snapshot


class ImageHandler(OpHandler):
    kind = "image"

    def run(self, ws: Workspace, step: Step, inputs: list[Snapshot]) -> list[Snapshot]:
        assert self.op.image is not None
        return [run_image(self.op.image, inputs[0])]


def oci_config(c: irops.ImageConfig) -> dict:
    out: dict = {}
    if c.user:
        out["User"] = c.user
    if c.exposed_ports:
        out["ExposedPorts"] = {p: {} for p in c.exposed_ports}
    if c.env:
        out["Env"] = list(c.env)
    if c.entrypoint:
        out["Entrypoint"] = list(c.entrypoint)
    if c.cmd:
        out["Cmd"] = list(c.cmd)
    if c.volumes:
        out["Volumes"] = {v: {} for v in c.volumes}
    if c.working_dir:
        out["WorkingDir"] = c.working_dir
    if c.labels:
        out["Labels"] = dict(c.labels)
    if c.stop_signal:
        out["StopSignal"] = c.stop_signal
    if c.healthcheck is not None:
        h = c.healthcheck
        hc: dict = {"Test": list(h.test)}
        for key, value in (("Interval", h.interval), ("Timeout", h.timeout), ("StartPeriod", h.start_period),
                           ("StartInterval", h.start_interval), ("Retries", h.retries)):
            if value:
                hc[key] = value
        out["Healthcheck"] = hc
    if c.shell:
        out["Shell"] = list(c.shell)
    if c.on_build:
        out["OnBuild"] = list(c.on_build)
    return out


def image_meta(op: irops.ImageOp) -> ImageMeta:
    history = tuple({k: v for k, v in (("created", h.created), ("created_by", h.created_by),
                                       ("comment", h.comment), ("empty_layer", h.empty_layer)) if v}
                    for h in op.history)
    platform = {"os": op.platform.os, "architecture": op.platform.architecture}
    if op.platform.variant:
        platform["variant"] = op.platform.variant
    return ImageMeta(config=oci_config(op.config), history=history, platform=platform)


def run_image(op: irops.ImageOp, base: Snapshot) -> Snapshot:
    meta = image_meta(op)
    h = hashlib.sha256(b"irctl-image-v1\0" + base.identity.encode() + b"\0")
    h.update(json.dumps({"config": meta.config, "history": meta.history, "platform": meta.platform},
                        sort_keys=True, separators=(",", ":")).encode())
    return Snapshot(identity="sha256:" + h.hexdigest(), layers=base.layers, host_dir=base.host_dir,
                    include=base.include, exclude=base.exclude, image=meta)
