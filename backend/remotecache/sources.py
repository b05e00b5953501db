"""Read the ``--cache-from`` caches a build may take results from, and answer its lookups.

Each cache is read once, at the start of a solve: a manifest and one config blob (a cache artifact),
or an image's config (an inline cache) — never a layer; layers come later, only those a step needs
(``backend.oci.pull.ImageResolver``).  A cache that is missing, unreadable, corrupt, written by
another irctl version or for another platform is left out with a warning: a cache never fails a
build.  Several caches may be given; for each key the first that has it answers.

A cache that is asked key by key instead (a REAPI server's action cache, ``backend.farm.cache``)
joins as a *live* source, consulted after the loaded caches: an object with ``name``, ``flag`` (the
option that named it), ``origin``, ``lookup(key)`` (the outputs, their layers made known to the
image resolver by the source itself, or None) and ``ran(key, outputs)`` (a step that ran here; the
source may keep its result).  The solver composes them: this module knows none.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from backend.errors import BackendError
from backend.oci.layout import ANNOT_REF_NAME, INDEX_TYPES, MT_DOCKER_MANIFEST, MT_OCI_MANIFEST, LayoutError, OCILayout, \
    Platform, select_manifest
from backend.oci.pull import Origin
from backend.oci.reference import RegistryError, parse_reference
from backend.remotecache.format import DIGEST, INLINE_KEY, INLINE_PREFIX, MAX_CONFIG, MT_CONFIG, CacheConfig, parse
from backend.remotecache.options import CacheImport
from backend.store.blobs import sha256_digest
from backend.store.records import Output

MAX_MANIFEST = 4 << 20
MT_BUILDKIT_CACHE = "application/vnd.buildkit.cacheconfig.v0"  # buildx's type=registry/local caches
BUILDKIT_CACHE = "it is BuildKit's cache (buildx --cache-to type=registry or type=local), which irctl cannot read"


class CacheUnusable(BackendError):
    """One ``--cache-from`` cache cannot be used; ``str()`` says which and why (shown as a warning)."""


@dataclass(frozen=True)
class LoadedCache:
    name: str  # as the user wrote it
    origin: Origin  # where its blobs are fetched from
    config: CacheConfig
    flag = "--cache-from"  # the option that named it (in warnings)


class RemoteCache:
    """The caches of one build, first given first; the live sources after them."""

    def __init__(self, caches: Sequence[LoadedCache], live: Sequence = ()) -> None:
        self.caches = list(caches)
        self.live = list(live)
        self.keeping: list = []  # live sources dropped for lookups, still told what ran

    def __bool__(self) -> bool:
        return bool(self.caches or self.live)

    def lookup(self, key: str) -> tuple[tuple[Output, ...], object] | None:
        for c in self.caches:
            found = c.config.records.get(key)
            if found is not None:
                return found, c
        for source in self.live:
            got = source.lookup(key)
            if got is not None:
                return got, source
        return None

    def ran(self, key: str, outputs: Sequence[Output]) -> None:
        """A step ran here and its ``outputs`` are filed under ``key``: for the live sources to keep."""
        for source in [*self.live, *self.keeping]:
            source.ran(key, outputs)

    def selection(self, identity: str, action: str) -> str | None:
        for c in self.caches:
            found = c.config.selections.get((identity, action))
            if found is not None:
                return found
        return None

    def drop(self, origin: Origin) -> LoadedCache | None:
        """Stop taking results from the cache at ``origin`` (it failed the build); returns it.  A live
        source dropped still keeps what runs here (what it gave was wrong; what it is given is not)."""
        for c in self.caches:
            if c.origin == origin:
                self.caches.remove(c)
                return c
        for source in self.live:
            if source.origin == origin:
                self.live.remove(source)
                self.keeping.append(source)
                return source
        return None


def load(imports: Sequence[CacheImport], *, client: Callable[[], object], platform: Platform,
         warn: Callable[[str], None]) -> RemoteCache:
    """The usable caches among ``imports`` (``client()``: the solve's registry client, made on first use)."""
    loaded = []
    for imp in imports:
        try:
            config, origin = (_read_registry(imp, client(), platform) if imp.type == "registry" else
                              _read_local(imp, platform))
            written_on = {k: v for k, v in config.platform.items() if k in ("os", "architecture", "variant")}
            if written_on and not platform.matches(written_on):
                raise CacheUnusable(f"it was written for {Platform.from_dict(written_on)}; this build is for {platform}")
        except (CacheUnusable, RegistryError, LayoutError, BackendError, OSError, RecursionError) as e:
            warn(f"warning: --cache-from {imp.name}: {_reason(e)}; building without it")
            continue
        loaded.append(LoadedCache(imp.name, origin, config))
    return RemoteCache(loaded)


def _reason(e: Exception) -> str:
    if isinstance(e, RegistryError) and getattr(e, "status", None) == 404:
        return "not found"
    if isinstance(e, RecursionError):
        return "its index.json is nested too deeply to read"
    if isinstance(e, OSError) and not isinstance(e, BackendError):
        return f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
    return str(e)


def _read_registry(imp: CacheImport, client, platform: Platform) -> tuple[CacheConfig, Origin]:
    ref = parse_reference(imp.ref)
    data, mt, _ = client.get_manifest(ref)
    body = _json(data, f"{imp.ref}: manifest")
    if mt in INDEX_TYPES or "manifests" in body:  # an image index: the inline cache of this platform's image
        desc = select_manifest({"manifests": _descriptors(body, imp.ref)}, platform, imp.ref)
        data, mt, _ = client.get_manifest(ref, desc["digest"])
        body = _json(data, f"{imp.ref}: manifest")
    cdesc = _config_descriptor(body, imp.ref)
    raw = client.fetch_blob_bytes(ref, cdesc["digest"], cdesc.get("size"))
    return _config(raw, cdesc, body, imp.ref), ("registry", ref)


def _read_local(imp: CacheImport, platform: Platform) -> tuple[CacheConfig, Origin]:
    path = Path(imp.path)
    if not (path / "index.json").is_file():
        raise CacheUnusable(f"no OCI layout at {path} (no index.json)")
    if (path / "index.json").stat().st_size > MAX_MANIFEST:  # (read whole, into memory, by OCILayout)
        raise CacheUnusable(f"{path}/index.json is larger than {MAX_MANIFEST} bytes")
    with OCILayout(path) as layout:
        entries = [d for d in _descriptors(layout.index, f"{path}/index.json")
                   if d.get("annotations", {}).get(ANNOT_REF_NAME) == imp.tag]
        if not entries:
            raise CacheUnusable(f"no cache tagged {imp.tag!r} in {path}")
        desc = entries[-1]
        data = _capped_blob(layout, desc["digest"], MAX_MANIFEST)
        body = _json(data, f"{path}: manifest")
        if body.get("mediaType") in INDEX_TYPES or "manifests" in body:
            desc = select_manifest({"manifests": _descriptors(body, str(path))}, platform, str(path))
            body = _json(_capped_blob(layout, desc["digest"], MAX_MANIFEST), f"{path}: manifest")
        cdesc = _config_descriptor(body, str(path))
        raw = _capped_blob(layout, cdesc["digest"], MAX_CONFIG)
    return _config(raw, cdesc, body, str(path)), ("layout", path.resolve())


def _capped_blob(layout: OCILayout, digest: str, cap: int) -> bytes:
    """A small blob of a layout someone else may have written: at most ``cap`` bytes, digest checked."""
    if not isinstance(digest, str) or not digest.startswith("sha256:"):
        raise CacheUnusable(f"malformed digest {digest!r} in {layout.path}")
    with layout.open_blob(digest) as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise CacheUnusable(f"{layout.path}: blob {digest} is larger than {cap} bytes")
    if sha256_digest(data) != digest:
        raise CacheUnusable(f"{layout.path}: blob {digest} does not match its digest")
    return data


def _json(data: bytes, where: str) -> dict:
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        raise CacheUnusable(f"{where} is not JSON") from None
    if not isinstance(body, dict):
        raise CacheUnusable(f"{where} is not a JSON object")
    return body


def _descriptors(index: object, where: str) -> list[dict]:
    """The ``manifests`` of an index someone else wrote, checked to be descriptors (objects with a
    string digest, and objects for annotations and platform) before anything looks inside them."""
    entries = index.get("manifests", []) if isinstance(index, dict) else None
    if not isinstance(entries, list) or not all(
            isinstance(d, dict) and isinstance(d.get("digest"), str) and isinstance(d.get("annotations", {}), dict)
            and isinstance(d.get("platform", {}), dict) for d in entries):
        raise CacheUnusable(f"{where}: not an OCI index (its manifests are not all descriptors)")
    if any(d.get("mediaType") == MT_BUILDKIT_CACHE for d in entries):
        raise CacheUnusable(BUILDKIT_CACHE)
    return entries


def _config_descriptor(manifest: dict, where: str) -> dict:
    if manifest.get("mediaType", MT_OCI_MANIFEST) not in (MT_OCI_MANIFEST, MT_DOCKER_MANIFEST):
        raise CacheUnusable(f"{where} is neither an irctl cache nor an image")
    cdesc = manifest.get("config")
    if not isinstance(cdesc, dict) or not isinstance(cdesc.get("digest"), str) or not DIGEST.fullmatch(cdesc["digest"]):
        raise CacheUnusable(f"{where}: its manifest has no config")
    if cdesc.get("mediaType") == MT_BUILDKIT_CACHE:
        raise CacheUnusable(BUILDKIT_CACHE)
    return cdesc


def _config(raw: bytes, cdesc: dict, manifest: dict, where: str) -> CacheConfig:
    """The cache in a config blob: the document itself (a cache artifact) or an image config's
    inline cache."""
    if cdesc.get("mediaType") == MT_CONFIG:
        return parse(raw, where)
    image = _json(raw, f"{where}: image config")
    if INLINE_KEY in image:
        return parse(image[INLINE_KEY], f"{where}: inline cache")
    other = sorted(k for k in image if k.startswith(INLINE_PREFIX))
    if other:
        raise CacheUnusable(f"its inline cache is {other[0]!r}, written by another irctl version "
                            f"(this one reads {INLINE_KEY!r})")
    if "moby.buildkit.cache.v0" in image:
        raise CacheUnusable("it holds BuildKit's inline cache, which irctl cannot use")
    raise CacheUnusable("it is an image without an inline cache (build it with --cache-to type=inline)")
