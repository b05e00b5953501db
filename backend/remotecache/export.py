"""Write a shared cache (``--cache-to``): what one solve learned (``CacheLedger``) as a ``CacheConfig``
and its blobs, into a registry, an OCI layout directory, or an image's own config (inline).

Which layers go in: ``mode=min``, the target's; ``mode=max``, those of every result.  A base image's
layers never do (a reader pulls them from the image, as the build did).  Every cache key the solve
met is written either way: a result whose layers are all in the cache (or in a base image) whole,
one whose layers are not *by key* (its identity keys what follows; a reader skips it when nothing
needs its files: ``backend.solve.task``).  No result carries an image config (an intermediate
stage's ``ENV`` may hold a token): a reader makes an image step's config from the op.  A layer is
compressed the way the image's were (the same ``write_layer_to_store`` memo), so the cache shares
the image's blobs and a registry already holding them receives none twice.  A result that came
from a shared cache and whose files this build never needed keeps the blob that cache named.

A registry replaces the tag's manifest in one PUT after every blob it names is there, so a
concurrent writer of the same tag leaves one valid cache; a directory is written by
``backend.remotecache.layoutdir``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Callable, Collection, Iterable

from ir import ops as irops

from backend.errors import BackendError, LayerError
from backend.oci.compression import MT_DOCKER_LAYER, MT_DOCKER_LAYER_GZIP, MT_LAYER, MT_LAYER_GZIP
from backend.oci.layerstore import write_layer_to_store
from backend.oci.layout import MT_DOCKER_MANIFEST, MT_OCI_MANIFEST, Platform, canonical_json, descriptor
from backend.oci.mountdir import holds_secret, overlay_lookalike
from backend.oci.pull import Origin, RemoteLayer
from backend.oci.reference import parse_reference
from backend.remotecache.format import ARTIFACT_TYPE, MT_CONFIG, CacheConfig
from backend.remotecache.ledger import CacheLedger
from backend.remotecache.options import ALL_MOUNTS, CacheExport
from backend.store.blobs import BlobError, BlobStore
from backend.store.cache import CacheStore
from backend.store.records import Output

MT_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"


class CacheExportError(BackendError):
    """Writing a shared cache failed; ``str()`` names the cache."""


def cache_mount_ids(doc: irops.Document) -> list[str]:
    """Every cache mount id the graph uses (``mounts=*``)."""
    found = {m.cache.id for op in doc.ops.values() if op.exec is not None
             for m in op.exec.mounts if m.cache is not None}
    return sorted(found)


def build_config(ledger: CacheLedger, store: CacheStore, *, target_layers: Iterable[str], mode: str,
                 compression: str, level: int | None, source_date_epoch: int | None,
                 mounts: Iterable[str] = (), only_layers: dict[str, RemoteLayer] | None = None,
                 warn: Callable[[str], None] = lambda text: None,
                 lost: Collection[str] = ()) -> tuple[CacheConfig, dict[str, Origin]]:
    """The document for ``ledger`` (of a finished solve) and where each blob it names comes from
    when it is not in ``store`` (a layer another shared cache gave this build, never fetched).

    ``only_layers`` (an inline cache): exactly these layers, as the image holds them.  ``lost``:
    layers left out (``fetch_elsewhere`` could not have them); their results are written by key."""
    records = dict(ledger.records)
    selections = dict(ledger.selections)
    base = set(ledger.base_layers)
    wanted: list[str] = []
    if only_layers is None:
        pool = target_layers if mode == "min" else (lid for outs in records.values() for o in outs for lid in o.layers)
        wanted = [lid for lid in dict.fromkeys(pool) if lid not in base]
    layers: dict[str, RemoteLayer] = dict(only_layers or {})
    elsewhere: dict[str, Origin] = {}
    variant = f"sde={source_date_epoch}"
    for lid in wanted:
        if lid in lost:
            continue
        path = store.layer_path(lid)
        if path.is_dir():
            b = write_layer_to_store(path, store.blobs, compression=compression, level=level,
                                     source_date_epoch=source_date_epoch, diff_id=lid)
            layers[lid] = RemoteLayer(b.digest, b.media_type, b.size, b.diff_id, variant)
            continue
        found = ledger.remote_layers.get(lid)
        if found is not None:
            layers[lid], origin = found
            if not store.blobs.has(found[0].blob):
                elsewhere[found[0].blob] = origin
    out = {key: tuple(Output(o.identity, o.layers, None, _clamped(o.created, source_date_epoch)) for o in outs)
           for key, outs in records.items()}
    seeds, mount_origins = _mount_blobs(store, mounts, compression, level, ledger.remote_mounts, warn)
    elsewhere.update(mount_origins)
    platform = {k: v for k, v in dataclasses.asdict(Platform.host()).items() if v}
    return CacheConfig(platform, out, selections, layers, seeds), elsewhere


def fetch_elsewhere(config: CacheConfig, elsewhere: dict[str, Origin], fetch: Callable[[str, int, Origin], None],
                    *, mountable: Callable[[Origin], bool], warn: Callable[[str], None]) -> set[str]:
    """Fetch (checked) the blobs of layers another shared cache gave this build and it never needed,
    but those a registry can mount from where they are; returns the ids of the layers that cannot
    be had (that cache lost or damaged them), each said in ``warn``: a cache this build read must
    not fail the one it writes."""
    lost = set()
    for lid, x in sorted(config.layers.items()):
        origin = elsewhere.get(x.blob)
        if origin is None or mountable(origin):
            continue
        try:
            fetch(x.blob, x.size, origin)
        except (BackendError, OSError) as e:
            text = str(e) if isinstance(e, BackendError) else f"{e.strerror or e}"
            warn(f"layer {lid} from {origin[1]} cannot be had ({text}); its results go in by key")
            lost.add(lid)
    return lost


def _clamped(created: tuple[int | None, ...], source_date_epoch: int | None) -> tuple[int | None, ...]:
    """Step times no later than SOURCE_DATE_EPOCH, as the image's own: the document goes into an image
    (inline) or a manifest, and two builds of the same sources must write the same bytes."""
    if source_date_epoch is None:
        return created
    limit = source_date_epoch * 1_000_000_000
    return tuple(t if t is None else min(t, limit) for t in created)


def _mount_blobs(store: CacheStore, ids: Iterable[str], compression: str, level: int | None,
                 remote: dict[str, tuple[RemoteLayer, Origin]], warn: Callable[[str], None],
                 ) -> tuple[dict[str, RemoteLayer], dict[str, Origin]]:
    """A blob of each cache mount's directory in this store, taken under its shared lock (a
    ``sharing=locked`` or ``private`` step writing it is waited for), and where each blob not in
    ``store`` comes from.  A mount this build never had a dir for keeps the copy a ``--cache-from``
    gave (``remote``); a dir that is not a plain one (``backend.oci.mountdir``) or that changed while
    it was archived is left out with a warning: a cache mount is a cache, never worth a failed export."""
    out: dict[str, RemoteLayer] = {}
    elsewhere: dict[str, Origin] = {}
    for cache_id in ids:
        path = store.mounts_dir / store.mount_name(cache_id)
        if not path.is_dir():
            if cache_id in remote:
                out[cache_id], origin = remote[cache_id]
                if not store.blobs.has(out[cache_id].blob):
                    elsewhere[out[cache_id].blob] = origin
            else:
                warn(f"warning: cache mount {cache_id!r} is not in this cache store (no step mounted it here); "
                     "not exported")
            continue
        fd = store.mount_lock(cache_id, exclusive=False)
        try:
            if holds_secret(path):  # (looked at under the lock: a step marks the dir before it lets go)
                warn(f"warning: cache mount {cache_id!r}: a step wrote a secret value of its build into it; "
                     "never exported (irctl cache prune --all removes it)")
                continue
            why = overlay_lookalike(path)
            if why:
                warn(f"warning: cache mount {cache_id!r}: {why}, which a cache cannot carry; not exported")
                continue
            b = write_layer_to_store(path, store.blobs, compression=compression, level=level)
        except (LayerError, OSError) as e:
            warn(f"warning: cache mount {cache_id!r}: {e}; not exported")
            continue
        finally:
            if fd is not None:
                os.close(fd)
        out[cache_id] = RemoteLayer(b.digest, b.media_type, b.size, b.diff_id, "")
    return out, elsewhere


def mount_ids(spec: CacheExport, doc: irops.Document, warn: Callable[[str], None] = lambda text: None) -> list[str]:
    """The cache mounts ``spec`` carries (``mounts=``, by id): every one the graph uses for ``*``;
    an id no step of the graph mounts is warned about and left out."""
    used = cache_mount_ids(doc)
    if ALL_MOUNTS in spec.mounts:
        return used
    for cache_id in spec.mounts:
        if cache_id not in used:
            warn(f"warning: --cache-to {spec.name}: no step of this build mounts a cache with id {cache_id!r} "
                 "(a cache mount's id is its id=, else its target); not exported")
    return [m for m in spec.mounts if m in used]


def manifest_for(config: CacheConfig, store: BlobStore, *, oci: bool = True) -> tuple[bytes, str]:
    """The cache's manifest (its config and layer blobs written to ``store``): bytes and media type."""
    config_bytes = config.to_bytes()
    store.write_bytes(config_bytes)
    blobs = {x.blob: x for x in [*config.layers.values(), *config.mounts.values()]}
    layers = [{"mediaType": _media_type(x.media_type, oci), "digest": x.blob, "size": x.size}
              for _, x in sorted(blobs.items())]
    if not layers:  # a manifest names at least one layer: the OCI "empty" blob stands in
        store.write_bytes(EMPTY)
        layers = [descriptor(MT_EMPTY, EMPTY)]
    manifest: dict = {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST if oci else MT_DOCKER_MANIFEST,
                      "config": descriptor(MT_CONFIG, config_bytes), "layers": layers}
    if oci:
        manifest["artifactType"] = ARTIFACT_TYPE
    raw = canonical_json(manifest)
    store.write_bytes(raw)
    return raw, manifest["mediaType"]


def _media_type(mt: str, oci: bool) -> str:
    if oci:
        return mt
    return {MT_LAYER_GZIP: MT_DOCKER_LAYER_GZIP, MT_LAYER: MT_DOCKER_LAYER}.get(mt, mt)


def blobs_of(manifest: bytes) -> list[tuple[str, int]]:
    body = json.loads(manifest)
    return [(d["digest"], d["size"]) for d in [body["config"], *body["layers"]]]


# -- registry ------------------------------------------------------------------------------------------
def push(spec: CacheExport, manifest: bytes, media_type: str, store: BlobStore, client,
         elsewhere: dict[str, Origin], fetch: Callable[[str, int, Origin], None]) -> tuple[int, int]:
    """Push the cache to ``spec.ref``: each blob the registry lacks (mounted from the repository a
    shared cache had it in when that is on the same registry), then the manifest under the tag.
    Returns (blobs uploaded, bytes uploaded)."""
    ref = parse_reference(spec.ref)
    if ref.digest:
        raise CacheExportError(f"--cache-to {spec.ref}: a cache is written under a tag, not a digest")
    uploaded = n_bytes = 0
    for digest, size in blobs_of(manifest):
        origin = elsewhere.get(digest)
        if origin is not None and not store.has(digest):  # another cache's blob this build never needed
            if client.blob_exists(ref, digest):
                continue
            if origin[0] == "registry" and origin[1].registry == ref.registry:
                with contextlib.suppress(BlobError):  # a refused mount starts an upload: of a blob we lack
                    if client.push_blob(ref, digest, mount_from=origin[1].repository) == "mounted":
                        continue
            fetch(digest, size, origin)
        if client.push_blob(ref, digest) == "uploaded":
            uploaded += 1
            n_bytes += size
    client.push_manifest(ref, manifest, media_type, tag=ref.tag or "latest")
    return uploaded, n_bytes
