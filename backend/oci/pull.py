"""Image sources: resolve a registry reference or an OCI-layout image to a manifest digest, a config
and a list of layers — without extracting anything.  Layers become layer dirs lazily, the first time
an exec or file op needs them (``ImageResolver.ensure_layer``); a fully cached rebuild never pulls.

A pinned digest whose manifest and config are already in the blob store is resolved offline.
Extracted layers are identified by their diff_id; the compressed blob is kept and recorded against
that diff_id in the blob store, so an exporter writes it out again without recompressing.

A layer is fetched and extracted by whichever step first needs it, but its progress (bytes of the
blob downloaded, then read while extracting: ``backend.events.Meter``) is reported under the source
op that named the image, as BuildKit shows it under ``FROM``.

Layers of a shared cache (``--cache-from``, ``backend.remotecache``) come the same way, lazily, from
the registry or directory that holds the cache: such a layer is named by the tree digest of the
build that made it, so it is used only once its blob hashes to its digest, its tar to its diff_id
and the extracted tree to its name.  When one cannot be had, ``LayerUnavailable`` says so, naming
the cache, and the solver builds again without what that cache promised.  A REAPI server's CAS
(``--remote-cache``, ``backend.farm``) is such a cache too: its blobs are streamed (ByteStream) into
the blob store, which checks their digest; a layer it names by its diff_id (a base image's, sent as
the image's own blob) is checked by its tar alone.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from backend.errors import BackendError, LayerError, SolveError
from backend.store.blobs import BlobError, CompressedBlob
from backend.store.cache import CacheStore
from backend.events import Callback, Meter, MeteredReader
from backend.oci.compression import MEDIA_TYPES, compression_named, sniff_compression
from backend.oci.extract import extract_layer
from backend.oci.extractproc import MIN_BLOB_BYTES, extract_elsewhere
from backend.oci.layertar import layer_diff_id
from backend.oci.layout import INDEX_TYPES, ImageRef, LayoutError, OCILayout, Platform, select_manifest
from backend.oci.mountdir import overlay_lookalike
from backend.oci.reference import RegistryError, parse_reference
from backend.snapshot.layertree import layer_tree_digest

Origin = tuple[str, object]  # ("registry", Reference), ("layout", Path) or ("reapi", Remote): where a blob is
Owner = tuple[str, str, str]  # the source op a layer's progress is shown under: (digest, description, group)
NO_OWNER: Owner = ("", "", "")
LAYER_WORKERS = 4  # layers fetched and unpacked at once (downloads wait on the network, unpacking on disk)


@dataclass(frozen=True)
class ImageLayer:
    diff_id: str
    blob: str
    media_type: str
    size: int


@dataclass(frozen=True)
class RemoteLayer:
    """A layer's blob in a shared cache: the compressed ``blob``, its tar's ``diff_id``, and the tar
    ``variant`` (``backend.oci.layerstore``: the SOURCE_DATE_EPOCH it was written with)."""

    blob: str
    media_type: str
    size: int
    diff_id: str
    variant: str = ""


class LayerUnavailable(SolveError):
    """A layer the solve counted on cannot be had: no image or cache names it, or the cache that
    does failed (``origin``: that cache, so the solver can build again without it)."""

    def __init__(self, message: str, origin: "Origin | None" = None) -> None:
        super().__init__(message)
        self.origin = origin


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
        self._origins: dict[str, Origin] = {}  # blob digest -> where to fetch it
        self._owners: dict[str, Owner] = {}  # blob digest -> the op whose progress shows it
        self._remote: dict[str, tuple[RemoteLayer, Origin]] = {}  # layer id -> its blob in a shared cache
        self._seeds: dict[str, tuple[RemoteLayer, Origin]] = {}  # cache mount id -> its dir's blob
        self._resolved: set[str] = set()  # diff_ids of the layers of the images resolved here
        self.remote_bytes = 0  # downloaded from shared caches (progress: what was imported)

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

    def _remember(self, res: ResolvedSource, origin: Origin, owner: Owner) -> None:
        with self._lock:
            for layer in res.layers:
                self._resolved.add(layer.diff_id)
                self._origins.setdefault(layer.blob, origin)
                self._owners.setdefault(layer.blob, owner)

    def _meter(self, blob: str, label: str, total: int) -> Meter:
        with self._lock:
            owner = self._owners.get(blob, NO_OWNER)
        return Meter(self.emit if owner[0] else None, owner, label, total)

    # -- shared caches -------------------------------------------------------------------------
    def add_remote(self, layers: dict[str, RemoteLayer], mounts: dict[str, RemoteLayer], origin: Origin) -> None:
        """Layers (by id) and cache mount dirs (by cache id) a shared cache at ``origin`` holds; the
        first cache to name one is where it comes from."""
        with self._lock:
            for lid, x in layers.items():
                self._remote.setdefault(lid, (x, origin))
            for mid, x in mounts.items():
                self._seeds.setdefault(mid, (x, origin))

    def forget_remote(self, origin: Origin) -> None:
        """Stop using the shared cache at ``origin`` (it failed)."""
        with self._lock:
            for table in (self._remote, self._seeds):
                for k in [k for k, (_, o) in table.items() if o == origin]:
                    del table[k]
            for blob in [b for b, o in self._origins.items() if o == origin]:  # another cache may have it
                del self._origins[blob]

    def can_supply(self, layer_id: str) -> bool:
        """Whether the layer dir of ``layer_id`` exists or can be made: extracted from a stored blob,
        pulled from the image that named it, or fetched from a shared cache."""
        if self.store.has_layer(layer_id):
            return True
        with self._lock:
            if layer_id in self._remote:
                return True
        found = self.store.layer_blob(layer_id)
        if found is None:
            return False
        with self._lock:
            return self.store.blobs.has(found[0]) or found[0] in self._origins

    def remote_layer(self, layer_id: str) -> tuple[RemoteLayer, Origin] | None:
        """The shared cache's blob of ``layer_id`` and where it is, if a cache named it."""
        with self._lock:
            return self._remote.get(layer_id)

    def resolved_layer(self, layer_id: str) -> bool:
        """Whether an image this resolver resolved names the layer ``layer_id`` (a diff_id): a base
        image's layer the build uses, not one a cache's result stacked in (``backend.farm.cas``)."""
        with self._lock:
            return layer_id in self._resolved

    def stored_blob(self, layer_id: str) -> ImageLayer | None:
        """The blob an image's layer (by diff_id) was pulled as, fetched into the blob store if only
        its registry has it; None for a layer no image named."""
        found = self.store.layer_blob(layer_id)
        if found is None:
            return None
        blob, media_type, size = found
        if not self.store.blobs.has(blob):
            self._fetch(blob, size)
        return ImageLayer(layer_id, blob, media_type, size)

    def set_owner(self, layer_id: str, owner: Owner) -> None:
        """Show the fetch of a shared cache's layer under ``owner`` (the step it was a hit for)."""
        with self._lock:
            found = self._remote.get(layer_id)
            if found is not None:
                self._owners.setdefault(found[0].blob, owner)

    def remote_mounts(self) -> dict[str, tuple[RemoteLayer, Origin]]:
        """The cache mount copies the shared caches still in use hold: a ``--cache-to`` carries one
        on when this build never mounted it (a fully cached build must not drop it from the cache)."""
        with self._lock:
            return dict(self._seeds)

    def seed_mount(self, cache_id: str, dest: Path, owner: Owner = NO_OWNER) -> bool:
        """Fill the new cache mount dir ``dest`` from a shared cache's copy of mount ``cache_id``
        (the caller calls this only while the store has no dir for that id: a local one is never
        overwritten); False when no cache has one.  The blob's digest and its tar's are checked, and
        a copy that is not a plain directory refused (``backend.oci.mountdir``).  Its bytes are shown
        under ``owner``, the step that mounts it.  Raises ``LayerUnavailable`` when the copy cannot
        be had: the solver then builds again without that cache, and the mount starts empty."""
        with self._lock:
            found = self._seeds.get(cache_id)
            if found is not None:
                self._owners.setdefault(found[0].blob, owner)
        if found is None:
            return False
        x, origin = found
        try:
            self._unpack_remote(x, origin, dest, f"restoring cache mount {cache_id}")
            why = overlay_lookalike(dest)
            if why:
                raise LayerError(f"{why}, which a cache mount cannot hold")
        except (LayerError, BlobError, OSError) as e:
            raise LayerUnavailable(f"cache mount {cache_id!r} from {_where(origin)}: {e}", origin) from None
        return True

    # -- lazy extraction ----------------------------------------------------------------------
    def ensure_layer(self, layer_id: str) -> Path:
        """The layer dir of an image layer (by diff_id) or of a shared cache's layer (by id),
        fetching and extracting it if needed."""
        return self.store.ensure_layer(layer_id, lambda dest: self._extract(layer_id, dest))

    def ensure_layers(self, layer_ids: list[str]) -> None:
        """``ensure_layer`` of every missing one at once: a result made of several fetched layers
        needs them all, and one layer's download or check overlaps another's unpacking.  Every
        one is tried; the first failure (in ``layer_ids`` order) is raised after all have ended."""
        missing = [i for i in dict.fromkeys(layer_ids) if not self.store.layer_path(i).is_dir()]
        if len(missing) < 2:
            for i in missing:
                self.ensure_layer(i)
            return
        with ThreadPoolExecutor(max_workers=min(LAYER_WORKERS, len(missing)), thread_name_prefix="layer") as pool:
            done = [pool.submit(self.ensure_layer, i) for i in missing]
        for f in done:
            f.result()

    def _extract(self, diff_id: str, dest: Path) -> None:
        with self._lock:
            remote = self._remote.get(diff_id)
        found = self.store.layer_blob(diff_id)
        if found is None or (not self.store.blobs.has(found[0]) and found[0] not in self._origins):
            if remote is not None:
                return self._extract_remote(diff_id, remote[0], remote[1], dest)
        if found is None:
            raise LayerUnavailable(f"layer {diff_id} is not in the cache and no image names it")
        blob, media_type, size = found
        if not self.store.blobs.has(blob):
            self._fetch(blob, size)
        dest.mkdir()
        meter = self._meter(blob, f"extracting {blob}", size)
        with self.store.blobs.open(blob) as f:
            meter(0)
            if size >= MIN_BLOB_BYTES:
                got = extract_elsewhere(f, media_type, dest, tree=False)[0]
            else:
                got = extract_layer(MeteredReader(f, meter), media_type, dest).diff_id  # type: ignore[arg-type]
        meter.finish()
        if got != diff_id:
            raise SolveError(f"layer blob {blob} unpacks to {got}, but the image config says {diff_id}")
        comp = compression_named(media_type)
        self.store.blobs.record_compressed(diff_id, comp, CompressedBlob(blob, size, MEDIA_TYPES[comp]))

    def _extract_remote(self, layer_id: str, x: RemoteLayer, origin: Origin, dest: Path) -> None:
        """A shared cache's layer: its blob, tar and tree each checked against what names it (one named
        by its diff_id, a base image's layer, by its tar: that is what its name says)."""
        by_tar = layer_id == x.diff_id
        try:
            tree = self._unpack_remote(x, origin, dest, f"extracting {x.blob}", tree=not by_tar)
            if not by_tar and tree != layer_id:
                raise LayerError(f"its blob {x.blob} unpacks to the tree {tree}, not the layer it names")
            with self.store.blobs.open(x.blob) as f:
                comp = sniff_compression(f.read(4))  # the bytes, not the cache's label, say how it is packed
            own = None if by_tar else _own_diff_id(dest, x.variant)
        except (LayerError, BlobError, OSError) as e:
            raise LayerUnavailable(f"layer {layer_id} from {_where(origin)}: {e}", origin) from None
        size = self.store.blobs.size(x.blob)  # (a blob already here was never checked against the cache's size)
        self.store.blobs.record_compressed(x.diff_id, comp, CompressedBlob(x.blob, size, MEDIA_TYPES[comp]))
        if own == x.diff_id:  # the export reuses the blob only when it is the very tar irctl writes of
            self.store.blobs.record_layer_alias(layer_id, x.variant, x.diff_id)  # the tree checked above

    def _unpack_remote(self, x: RemoteLayer, origin: Origin, dest: Path, label: str, *, tree: bool = False
                       ) -> str | None:
        """Fetch a shared cache's blob and extract it into the new dir ``dest``, its bytes shown as
        ``label``; with ``tree``, return the tree digest of ``dest`` (from the files as extraction
        wrote them, not read back).  ``LayerError`` when its tar is not the ``diff_id`` the cache
        names.  A big blob is unpacked in a process of its own (``backend.oci.extractproc``)."""
        self._fetch_remote(x, origin)
        dest.mkdir()
        meter = self._meter(x.blob, label, x.size)
        with self.store.blobs.open(x.blob) as f:
            meter(0)
            if x.size >= MIN_BLOB_BYTES:
                got, digest = extract_elsewhere(f, x.media_type, dest, tree=tree)
            else:
                res = extract_layer(MeteredReader(f, meter), x.media_type, dest, note_files=tree)  # type: ignore[arg-type]
                got, digest = res.diff_id, layer_tree_digest(dest, known=res.files) if tree else None
        meter.finish()
        if got != x.diff_id:
            raise LayerError(f"its blob {x.blob} unpacks to {got}, not the {x.diff_id} the cache names")
        return digest

    def _fetch_remote(self, x: RemoteLayer, origin: Origin) -> None:
        if self.store.blobs.has(x.blob):
            return
        try:  # from the cache, never noted as where the blob is (a base image naming it pulls its own)
            self._fetch(x.blob, x.size, origin)
        except (SolveError, LayoutError, OSError) as e:
            raise LayerUnavailable(str(e), origin) from None
        with self._lock:
            self.remote_bytes += x.size

    def _fetch(self, blob: str, size: int, origin: Origin | None = None) -> None:
        if origin is None:
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
            elif kind == "reapi":
                self._fetch_reapi(where, blob, size, meter)
            else:
                with OCILayout(where) as layout, layout.open_blob(blob) as f:  # type: ignore[arg-type]
                    self.store.blobs.ingest(MeteredReader(f, meter), blob, size or None)  # type: ignore[arg-type]
        except RegistryError as e:
            raise SolveError(f"pulling layer {blob}: {e}") from None
        meter.finish()

    def _fetch_reapi(self, remote, blob: str, size: int, meter: Meter) -> None:
        """Stream a blob from a REAPI server's CAS (``backend.reapi.client.Remote``) into the blob store,
        which checks its digest and size."""
        try:
            with remote.open_blob((blob, size)) as f:
                self.store.blobs.ingest(MeteredReader(f, meter), blob, size)  # type: ignore[arg-type]
        except BackendError as e:  # RemoteError (grpc: not imported here) or a digest mismatch
            raise SolveError(f"pulling layer {blob}: {e}") from None


def _own_diff_id(layer_dir: Path, variant: str) -> str | None:
    """The diff_id of the tar irctl writes of ``layer_dir`` with the SOURCE_DATE_EPOCH ``variant``
    names (``sde=N``/``sde=None``); None for any other variant.  A tree digest leaves out what a tar
    can carry beyond it (mtimes, xattrs extraction skips, hard links): a cache's blob is reused for
    the layer in a later export (a memo every later build trusts) only when it is exactly this tar."""
    sde = variant.removeprefix("sde=")
    if not variant.startswith("sde=") or not (sde == "None" or sde.isascii() and sde.isdigit()):
        return None
    return layer_diff_id(layer_dir, source_date_epoch=None if sde == "None" else int(sde))


def _where(origin: Origin) -> str:
    kind, where = origin
    if kind == "reapi":
        return f"--remote-cache {where.endpoint.url}"  # type: ignore[attr-defined]
    return f"cache {where}" if kind == "registry" else f"cache directory {where}"
