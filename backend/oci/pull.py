"""Image sources: resolve a registry reference or an OCI-layout image to a manifest digest, a config
and a list of layers — without extracting anything.  Layers become layer dirs lazily, the first time
an exec or file op needs them (``ImageResolver.ensure_layer``); a fully cached rebuild never pulls.

A pinned digest whose manifest and config are already in the blob store is resolved offline.
Extracted layers are identified by their diff_id; the compressed blob is kept and recorded against
that diff_id in the blob store, so an exporter writes it out again without recompressing.

A layer is fetched and extracted by whichever step first needs it, but its progress (bytes of the
blob downloaded, then read while extracting: ``backend.events.Meter``) is reported under the source
op that named the image, as BuildKit shows it under ``FROM``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

from backend.store.blobs import CompressedBlob
from backend.store.cache import CacheStore
from backend.errors import SolveError
from backend.events import Callback, Meter, MeteredReader
from backend.oci.compression import MEDIA_TYPES, compression_named
from backend.oci.extract import extract_layer
from backend.oci.layout import INDEX_TYPES, ImageRef, LayoutError, OCILayout, Platform, select_manifest
from backend.oci.reference import RegistryError, parse_reference

SourceOrigin = tuple[str, str]  # ("registry", "host/repo") or ("layout", "/path")
Owner = tuple[str, str, str]  # the source op a layer's progress is shown under: (digest, description, group)
NO_OWNER: Owner = ("", "", "")


@dataclass(frozen=True)
class ImageLayer:
    diff_id: str
    blob: str
    media_type: str
    size: int


@dataclass(frozen=True)
class ResolvedSource:
    manifest_digest: str
    config: dict  # the whole image config JSON
    layers: tuple[ImageLayer, ...]


def to_platform(p) -> Platform:
    return Platform(p.os, p.architecture, p.variant or None)


class ImageResolver:
    """Resolves image and OCI-layout sources for one solve; knows where to fetch each layer's blob."""

    def __init__(self, store: CacheStore, *, insecure: tuple[str, ...] = (), emit: Callback | None = None):
        self.store = store
        self.insecure = insecure
        self.emit = emit
        self._client = None
        self._lock = threading.Lock()
        self._origins: dict[str, tuple[str, object]] = {}  # blob digest -> ("registry", Reference) | ("layout", path)
        self._owners: dict[str, Owner] = {}  # blob digest -> the op whose progress shows it

    def client(self):
        with self._lock:
            if self._client is None:
                # lazy: httpx (~0.1 s to import) only when a registry is asked; offline resolution
                from backend.oci.registry import RegistryClient  # and cached rebuilds never need it

                self._client = RegistryClient(store=self.store.blobs, insecure=self.insecure)
            return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # -- resolution ---------------------------------------------------------------------------
    def resolve_registry(self, ref_text: str, digest: str, platform, owner: Owner = NO_OWNER) -> ResolvedSource:
        try:
            ref = parse_reference(ref_text)
            if digest:
                ref = ref.with_digest(digest)
                offline = self._offline(digest, to_platform(platform))
                if offline is not None:
                    self._remember(offline, ("registry", ref), owner)
                    return offline
            img = self.client().resolve(ref, to_platform(platform))
        except RegistryError as e:
            raise SolveError(f"image {ref_text}: {e}") from None
        if digest and digest not in (img.manifest_digest, img.index_digest):
            raise SolveError(f"image {ref_text}: registry returned {img.manifest_digest}, not the pinned {digest}")
        if img.index_digest:
            self.store.blobs.write_bytes(self.client().get_manifest(img.reference, img.index_digest)[0])
        res = self._from_manifest(img.manifest_digest, img.manifest, img.config)
        self._remember(res, ("registry", img.reference), owner)
        return res

    def resolve_layout(self, path: Path, ref: str, digest: str, platform, owner: Owner = NO_OWNER) -> ResolvedSource:
        try:
            with OCILayout(path) as layout:
                plat = to_platform(platform)
                if digest:
                    raw = layout.read_blob(digest)
                    body = json.loads(raw)
                    for _ in range(8):
                        if body.get("mediaType") not in INDEX_TYPES and "manifests" not in body:
                            break
                        digest = select_manifest(body, plat, f"{path} index")["digest"]
                        raw = layout.read_blob(digest)
                        body = json.loads(raw)
                    image = ImageRef({"digest": digest}, body, raw)
                else:
                    image = layout.resolve(ref or None, plat)
                layout.copy_to_store(image, self.store.blobs)
                config = json.loads(self.store.blobs.read_bytes(image.config_digest))
                manifest_digest = image.descriptor["digest"]
        except (LayoutError, KeyError, ValueError) as e:
            raise SolveError(f"OCI layout {path}: {e}") from None
        res = self._from_manifest(manifest_digest, image.manifest, config)
        self._remember(res, ("layout", path), owner)
        return res

    def _offline(self, digest: str, platform: Platform) -> ResolvedSource | None:
        """Resolve a pinned digest from the blob store alone (manifest or index, plus config)."""
        blobs = self.store.blobs
        for _ in range(4):
            if not blobs.has(digest):
                return None
            body = json.loads(blobs.read_bytes(digest))
            if body.get("mediaType") in INDEX_TYPES or "manifests" in body:
                try:
                    digest = select_manifest(body, platform)["digest"]
                except Exception:
                    return None
                continue
            cfg = body.get("config", {}).get("digest")
            if not cfg or not blobs.has(cfg):
                return None
            return self._from_manifest(digest, body, json.loads(blobs.read_bytes(cfg)))
        return None

    def _from_manifest(self, manifest_digest: str, manifest: dict, config: dict) -> ResolvedSource:
        diff_ids = config.get("rootfs", {}).get("diff_ids", [])
        descs = manifest.get("layers", [])
        if len(diff_ids) != len(descs):
            raise SolveError(f"image {manifest_digest}: {len(descs)} layers but {len(diff_ids)} diff_ids in its config")
        layers = tuple(ImageLayer(d, l["digest"], l.get("mediaType", ""), int(l.get("size", 0)))
                       for d, l in zip(diff_ids, descs))
        for layer in layers:
            self.store.record_layer_blob(layer.diff_id, layer.blob, layer.media_type, layer.size)
            comp = compression_named(layer.media_type)  # an exporter reuses the pulled blob once it is here
            self.store.blobs.record_compressed(layer.diff_id, comp,
                                               CompressedBlob(layer.blob, layer.size, MEDIA_TYPES[comp]))
        return ResolvedSource(manifest_digest, config, layers)

    def _remember(self, res: ResolvedSource, origin: tuple[str, object], owner: Owner) -> None:
        with self._lock:
            for layer in res.layers:
                self._origins.setdefault(layer.blob, origin)
                self._owners.setdefault(layer.blob, owner)

    def _meter(self, blob: str, label: str, total: int) -> Meter:
        with self._lock:
            owner = self._owners.get(blob, NO_OWNER)
        return Meter(self.emit if owner[0] else None, owner, label, total)

    # -- lazy extraction ----------------------------------------------------------------------
    def ensure_layer(self, layer_id: str) -> Path:
        """The layer dir of an image layer (by diff_id), fetching and extracting it if needed."""
        return self.store.ensure_layer(layer_id, lambda dest: self._extract(layer_id, dest))

    def _extract(self, diff_id: str, dest: Path) -> None:
        found = self.store.layer_blob(diff_id)
        if found is None:
            raise SolveError(f"layer {diff_id} is not in the cache and no image names it")
        blob, media_type, size = found
        if not self.store.blobs.has(blob):
            self._fetch(blob, size)
        dest.mkdir()
        meter = self._meter(blob, f"extracting {blob}", size)
        with self.store.blobs.open(blob) as f:
            meter(0)
            got = extract_layer(MeteredReader(f, meter), media_type, dest).diff_id  # type: ignore[arg-type]
        meter.finish()
        if got != diff_id:
            raise SolveError(f"layer blob {blob} unpacks to {got}, but the image config says {diff_id}")
        comp = compression_named(media_type)
        self.store.blobs.record_compressed(diff_id, comp, CompressedBlob(blob, size, MEDIA_TYPES[comp]))

    def _fetch(self, blob: str, size: int) -> None:
        with self._lock:
            origin = self._origins.get(blob)
        if origin is None:
            raise SolveError(f"layer blob {blob} is missing from the cache; re-run without a pruned cache")
        kind, where = origin
        meter = self._meter(blob, blob, size)
        meter(0)
        try:
            if kind == "registry":
                self.client().fetch_blob(where, blob, size or None, progress=meter)
            else:
                with OCILayout(where) as layout, layout.open_blob(blob) as f:  # type: ignore[arg-type]
                    self.store.blobs.ingest(MeteredReader(f, meter), blob, size or None)  # type: ignore[arg-type]
        except RegistryError as e:
            raise SolveError(f"pulling layer {blob}: {e}") from None
        meter.finish()
