"""``--cache-from`` and ``--cache-to`` for ``build`` and ``solve``: the parsed values for the solver,
the inline cache an image output carries, and the caches written after the build
(``backend.remotecache``).  A cache that cannot be read is a warning (the solver's); one that cannot
be written fails the command unless its ``ignore-error=true``."""

from __future__ import annotations

import os
from pathlib import Path

from irctl.errors import UserError


def imports(values: list[str]) -> tuple:
    from backend.remotecache.options import CacheOptionError, parse_cache_from  # lazy: --help loads this module

    try:
        return tuple(dict.fromkeys(parse_cache_from(v) for v in values))
    except CacheOptionError as e:
        raise UserError(str(e)) from None


def exports(values: list[str]) -> tuple:
    from backend.remotecache.options import CacheOptionError, parse_cache_to  # lazy: as in imports()

    try:
        return tuple(parse_cache_to(v) for v in values)
    except CacheOptionError as e:
        raise UserError(str(e)) from None


def ledger_for(specs: tuple):
    """What the solver should note for ``specs`` (None: no --cache-to)."""
    if not specs:
        return None
    from backend.remotecache.ledger import CacheLedger  # lazy: only with --cache-to

    return CacheLedger()


def source_date_epoch() -> int | None:
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    try:
        return int(epoch) if epoch else None
    except ValueError:
        raise UserError(f"SOURCE_DATE_EPOCH={epoch!r} is not a number of seconds") from None


def inline_cache(spec, ledger, cache_root: Path, options) -> dict:
    """The inline cache (``--cache-to type=inline``) for the image ``spec`` exported with ``options``:
    the solve's records, naming that image's own layer blobs."""
    from backend.oci.layerstore import write_layer_to_store  # lazy: only with --cache-to type=inline
    from backend.oci.layertar import is_empty_layer  # lazy: as above
    from backend.oci.pull import RemoteLayer  # lazy: as above
    from backend.remotecache.export import build_config  # lazy: as above
    from backend.remotecache.format import INLINE_KEY  # lazy: as above
    from backend.store.cache import CacheStore  # lazy: as above

    store = CacheStore(cache_root)
    layers = {}
    for src in spec.layers:
        if src.diff_id is None or is_empty_layer(src.path):
            continue
        b = write_layer_to_store(src.path, store.blobs, compression=options.compression, level=options.level,
                                 source_date_epoch=options.source_date_epoch, diff_id=src.diff_id)
        layers[src.diff_id] = RemoteLayer(b.digest, b.media_type, b.size, b.diff_id,
                                          f"sde={options.source_date_epoch}")
    config, _ = build_config(ledger, store, target_layers=(), mode="min", compression=options.compression,
                             level=options.level, source_date_epoch=options.source_date_epoch, only_layers=layers)
    return {INLINE_KEY: config.to_json()}


def warn_inline_without_image(outputs, emit) -> None:
    """``--cache-to type=inline`` with no image output to carry it: said, not an error."""
    if not any(o.type in ("oci", "docker", "registry") for o in outputs):
        emit("warning: --cache-to type=inline goes into an image: it needs --push or an oci, docker or "
             "registry --output; not written")


def export_caches(specs: tuple, snapshot, ledger, doc, *, cache_root: Path, insecure: tuple[str, ...], emit) -> None:
    """Write every ``--cache-to`` but the inline ones (those went with the image)."""
    from backend.errors import BackendError  # lazy: only with --cache-to
    from backend.store.cache import CacheStore  # lazy: as above

    store = CacheStore(cache_root)
    with store.locked("gc.lock", exclusive=False):  # a concurrent prune waits for us
        for spec in specs:
            if spec.type == "inline":
                continue
            try:
                emit(_export_one(spec, snapshot, ledger, doc, store, insecure, emit))
            except (BackendError, OSError) as e:
                text = str(e) if isinstance(e, BackendError) else f"{e.strerror or e}: {e.filename or ''}".rstrip(": ")
                if not spec.ignore_error:
                    raise UserError(f"--cache-to {spec.name}: {text}") from None
                emit(f"warning: --cache-to {spec.name}: {text} (not written; ignore-error=true)")


def _export_one(spec, snapshot, ledger, doc, store, insecure: tuple[str, ...], emit) -> str:
    from backend.oci.layout import OCILayout  # lazy: only with --cache-to
    from backend.oci.reference import parse_reference  # lazy: as above
    from backend.remotecache import export as cx  # lazy: as above
    from backend.remotecache import layoutdir  # lazy: as above

    mount_ids = cx.mount_ids(spec, doc, emit)

    def config_of(lost=()):  # (said once: a second call leaves out the layers the first could not have)
        return cx.build_config(
            ledger, store, target_layers=["sha256:" + Path(p).name for p in snapshot.layers], mode=spec.mode,
            compression=spec.compression, level=spec.level, source_date_epoch=source_date_epoch(),
            mounts=mount_ids, warn=(lambda text: None) if lost else emit, lost=lost)

    client = None

    def registry_client():
        nonlocal client
        if client is None:
            from backend.oci.registry import RegistryClient  # lazy: httpx, only for a registry

            host = spec.ref.split("/", 1)[0] if spec.insecure else ""
            client = RegistryClient(store=store.blobs, insecure=insecure + ((host,) if host else ()))
        return client

    def fetch(digest: str, size: int, origin) -> None:
        kind, where = origin
        if kind == "registry":
            registry_client().fetch_blob(where, digest, size)
        elif kind == "reapi":  # a --remote-cache hit's layer (that solve's connection is closed by now)
            from backend.reapi.client import Remote  # lazy: grpc, only with --remote-cache

            with Remote(where.endpoint) as remote, remote.open_blob((digest, size)) as f:
                store.blobs.ingest(f, digest, size)
        else:
            with OCILayout(where) as layout, layout.open_blob(digest) as f:
                store.blobs.ingest(f, digest, size)

    def mountable(origin) -> bool:  # a registry blob the push mounts (or finds) where it is
        return (spec.type == "registry" and origin[0] == "registry"
                and origin[1].registry == parse_reference(spec.ref).registry)

    try:
        config, elsewhere = config_of()
        lost = cx.fetch_elsewhere(config, elsewhere, fetch, mountable=mountable,
                                  warn=lambda text: emit(f"warning: --cache-to {spec.name}: {text}"))
        if lost:
            config, elsewhere = config_of(lost)
        manifest, media_type = cx.manifest_for(config, store.blobs, oci=spec.oci_mediatypes)
        if spec.type == "registry":
            n, size = cx.push(spec, manifest, media_type, store.blobs, registry_client(), elsewhere, fetch)
            verb = "uploaded"
        else:
            n, size = layoutdir.write_dir(spec, manifest, media_type, store.blobs, elsewhere, fetch)
            verb = "written"
    finally:
        if client is not None:
            client.close()
    have = config.layers.keys() | ledger.base_layers
    whole = sum(1 for outs in config.records.values() if all(lid in have for o in outs for lid in o.layers))
    mounts = f", {len(config.mounts)} cache mounts" if config.mounts else ""
    return (f"cache exported to {spec.name} (mode={spec.mode}): {len(config.records)} results ({whole} with their "
            f"layers), {len(config.layers)} layers{mounts}; {n} blobs {verb} ({size / 1e6:.1f} MB)")
