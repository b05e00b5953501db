"""What an exporter is given (``ImageSpec``) and the one place that turns it into OCI objects.

``build_image`` compresses the layers (in parallel, cached by diff_id in the BlobStore), skips empty
ones, reconciles the history with the layers actually kept, and writes the config and the manifest
as canonical JSON into the BlobStore. Every exporter starts from its ``BuiltImage``. With
``source_date_epoch`` the output is a pure function of the layer trees and the spec.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

from backend.errors import ExportError
from backend.store.blobs import BlobStore
from backend.oci.compression import MT_DOCKER_LAYER, MT_DOCKER_LAYER_GZIP, MT_LAYER, MT_LAYER_GZIP
from backend.oci.layerstore import write_layers_to_store
from backend.oci.layertar import LayerBlob, is_empty_layer
from backend.oci.layout import MT_DOCKER_CONFIG, MT_DOCKER_MANIFEST, MT_OCI_CONFIG, MT_OCI_MANIFEST, canonical_json, descriptor


@dataclass(frozen=True)
class LayerSource:
    """A layer directory (overlay upper-dir format), if known the diff_id of the blob it came from, and
    when the step that made it ran (RFC 3339): the time of its history entry."""

    path: Path
    diff_id: str | None = None
    created: str | None = None


LayerLike = Union[LayerSource, str, os.PathLike]

CONFIG_KEYS = ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "Labels",
               "StopSignal", "Healthcheck", "OnBuild", "Shell", "ArgsEscaped")


@dataclass
class ImageSpec:
    layers: list[LayerLike]
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    platform: dict = field(default_factory=lambda: {"os": "linux", "architecture": "amd64"})
    created: str | None = None
    annotations: dict = field(default_factory=dict)
    # top-level fields of the image config beyond the standard ones (an inline cache:
    # backend.remotecache.format.INLINE_KEY); never one of the standard names
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ExportOptions:
    compression: str = "gzip"  # gzip | zstd | none
    level: int | None = None
    source_date_epoch: int | None = None
    media_types: str = "oci"  # oci | docker
    threads: int = 0  # zstd worker threads per layer
    max_workers: int | None = None  # layers compressed at once


@dataclass(frozen=True)
class BuiltImage:
    """An image whose config, manifest and layer blobs are all in the BlobStore."""

    descriptor: dict  # of the manifest, with platform
    manifest: dict
    manifest_bytes: bytes
    config: dict
    config_bytes: bytes
    layers: list[LayerBlob]

    @property
    def digest(self) -> str:
        return self.descriptor["digest"]

    @property
    def media_type(self) -> str:
        return self.descriptor["mediaType"]


def rfc3339(epoch: int) -> str:
    return _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_now() -> str:
    return rfc3339_ns(time.time_ns())


def rfc3339_ns(ns: int) -> str:
    """UTC, microseconds, ``Z``: the form of every time we write (integer arithmetic: no float rounding)."""
    sec, rest = divmod(ns, 1_000_000_000)
    t = _dt.datetime.fromtimestamp(sec, _dt.timezone.utc).replace(microsecond=rest // 1000)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def layer_source(x: LayerLike) -> LayerSource:
    return x if isinstance(x, LayerSource) else LayerSource(Path(x))


def reconcile_history(history: Sequence[dict], kept: Sequence[bool], created: str,
                      times: Sequence[str | None] | None = None) -> list[dict]:
    """Make the non-empty history entries line up one-to-one with the layers actually written.

    ``kept[i]`` says whether spec layer ``i`` became a layer. Entries not marked ``empty_layer`` are
    paired with spec layers in order (``spec/ir.md`` § 6.4).  With fewer entries than layers (a
    generator left out the base image's history, or the base image has none) the oldest layers get
    the generic entries, placed first, so no entry moves onto another step's layer; surplus entries
    (a step that changed nothing made no layer) are marked ``empty_layer`` from the newest, as
    BuildKit does.  A pairing with a skipped layer becomes ``empty_layer``.

    Times, as BuildKit's exporter gives them: an entry keeps its own ``created`` (a base image's); a
    layer's entry without one takes ``times[i]``, when the step that made layer ``i`` ran; an empty
    entry without one takes the time of the entry before it, or, before any new layer, the time of
    the first new layer (so an ``ENV`` right after ``FROM`` is not dated like the base image). So a
    cached step keeps its time and a no-op rebuild gives the same config. What is still undated
    (no times known at all) gets ``created``.
    """
    i = max(0, len(kept) - sum(1 for h in history if not h.get("empty_layer")))  # oldest layers without an entry
    out: list[dict] = [{"created": times[j] if times is not None and j < len(times) and times[j] else None,
                        "created_by": "irctl", "comment": "layer without history entry"}
                       for j in range(i) if kept[j]]
    for h in history:
        h = {k: v for k, v in h.items() if v not in (None, "", False)}
        if not h.get("empty_layer"):
            if i < len(kept) and kept[i]:
                h.pop("empty_layer", None)
            else:
                h["empty_layer"] = True
            if "created" not in h and times is not None and i < len(times) and times[i]:
                h["created"] = times[i]
            i += 1
        out.append(h)
    _fill_times(out, created)
    return out


def _fill_times(history: list[dict], fallback: str) -> None:
    """Date the undated entries in place: before the first undated one nothing changes; from there
    on an undated entry takes the last dated one seen after the gap began, or the first such."""
    first_new = None
    gap = False
    for h in history:
        if h.get("created"):
            first_new = h["created"]
            if gap:
                break
        else:
            gap = True
    current = first_new or fallback
    gap = False
    for h in history:
        if h.get("created"):
            if gap:
                current = h["created"]
        else:
            gap = True
            h["created"] = current


def build_config(spec: ImageSpec, diff_ids: list[str], history: list[dict], created: str) -> dict:
    cfg = {k: v for k, v in spec.config.items() if v is not None and v != [] and v != {}}
    unknown = sorted(set(cfg) - set(CONFIG_KEYS))
    if unknown:
        raise ExportError(f"unknown image config keys: {', '.join(unknown)} (known: {', '.join(CONFIG_KEYS)})")
    out: dict = {
        "architecture": spec.platform.get("architecture", "amd64"),
        "os": spec.platform.get("os", "linux"),
        "created": created,
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    if spec.platform.get("variant"):
        out["variant"] = spec.platform["variant"]
    clash = sorted(set(spec.extra) & (set(out) | {"variant", "author", "os.version", "os.features"}))
    if clash:
        raise ExportError(f"extra image config fields {', '.join(clash)} would replace standard ones")
    out.update(spec.extra)
    return out


def build_image(spec: ImageSpec, store: BlobStore, options: ExportOptions = ExportOptions()) -> BuiltImage:
    """Compress layers, write config + manifest into ``store``, return what was built."""
    if options.media_types not in ("oci", "docker"):
        raise ExportError(f"media_types must be 'oci' or 'docker', not {options.media_types!r}")
    sources = [layer_source(x) for x in spec.layers]
    for s in sources:
        if not s.path.is_dir():
            raise ExportError(f"layer directory {s.path} does not exist")
    kept = [not is_empty_layer(s.path) for s in sources]
    blobs = write_layers_to_store(
        [(s.path, s.diff_id) for s, k in zip(sources, kept) if k],
        store,
        compression=options.compression,
        level=options.level,
        source_date_epoch=options.source_date_epoch,
        max_workers=options.max_workers,
        threads=options.threads,
    )
    sde = options.source_date_epoch
    times = [s.created for s in sources]
    if sde is not None:
        created = rfc3339(sde)
    else:
        created = spec.created or max(filter(None, times), default=None) or rfc3339_now()
    history = reconcile_history(spec.history, kept, created, times)
    if sde is not None:
        for h in history:
            h["created"] = created
    elif not spec.created and history:
        created = history[-1]["created"]  # the image is as old as its last step (BuildKit)
    config = build_config(spec, [b.diff_id for b in blobs], history, created)
    config_bytes = canonical_json(config)
    store.write_bytes(config_bytes)
    docker = options.media_types == "docker"
    layer_descs = [{"mediaType": _layer_media_type(b, docker), "digest": b.digest, "size": b.size} for b in blobs]
    manifest: dict = {
        "schemaVersion": 2,
        "mediaType": MT_DOCKER_MANIFEST if docker else MT_OCI_MANIFEST,
        "config": descriptor(MT_DOCKER_CONFIG if docker else MT_OCI_CONFIG, config_bytes),
        "layers": layer_descs,
    }
    if spec.annotations and not docker:
        manifest["annotations"] = dict(spec.annotations)
    manifest_bytes = canonical_json(manifest)
    store.write_bytes(manifest_bytes)
    platform = {k: spec.platform[k] for k in ("architecture", "os", "variant") if spec.platform.get(k)}
    desc = descriptor(manifest["mediaType"], manifest_bytes, platform=platform)
    return BuiltImage(desc, manifest, manifest_bytes, config, config_bytes, blobs)


def _layer_media_type(b: LayerBlob, docker: bool) -> str:
    if not docker:
        return b.media_type
    return {MT_LAYER_GZIP: MT_DOCKER_LAYER_GZIP, MT_LAYER: MT_DOCKER_LAYER}.get(b.media_type, b.media_type)

