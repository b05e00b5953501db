"""Send a solved snapshot to the outputs the user asked for (``--output``, ``-t``, ``--push``).

Every build imports this module; the exporters are imported when an output needs them (``# lazy:``),
each output type its own (the registry's client costs ~150 ms with httpx)."""

from __future__ import annotations

import os
from pathlib import Path

from irctl.errors import UserError
from irctl.options import Output


def image_spec(snapshot, created: str | None = None):
    """A solved snapshot as an exporter's ``ImageSpec``; layer ids double as diff_id hints so a
    pulled layer's original blob is reused instead of recompressed, and each layer carries the time
    its step ran (the history's times: a cached step keeps its own)."""
    from backend.export.image import ImageSpec, LayerSource, rfc3339_ns  # lazy: see the module's docstring

    meta = snapshot.image
    layers = [LayerSource(Path(p), "sha256:" + Path(p).name, None if t is None else rfc3339_ns(t))
              for p, t in zip(snapshot.layers, snapshot.layer_times())]
    if meta is None:
        return ImageSpec(layers=layers, created=created)
    return ImageSpec(layers=layers, config=dict(meta.config), history=[dict(h) for h in meta.history],
                     platform=dict(meta.platform), created=created)


def export(snapshot, outputs: list[Output], tags: list[str], *, cache_root: Path, insecure: tuple[str, ...],
           emit, inline=None) -> list[dict]:
    """Run every output; returns per output the line describing what was written (``line``) and, for
    a file the store's export memo vouches for (``backend.export.reuse``), its ``dest`` and ``what``.
    ``inline``: the solve's ``CacheLedger``, for an inline cache in every image written
    (``--cache-to type=inline``)."""
    from backend.store.blobs import BlobStore  # lazy: see the module's docstring
    from backend.store.cache import CacheStore  # lazy: see the module's docstring

    store = BlobStore(cache_root)
    snapshot = _shim_one_image(snapshot)  # TEMPORARY (plat, until the index engineer's export(images, …) merges)
    with CacheStore(cache_root).locked("gc.lock", exclusive=False):  # a concurrent prune waits for us
        return _export_all(snapshot, outputs, tags, store, insecure, emit, inline)


def _shim_one_image(images):
    """TEMPORARY (plat): ``images`` as ``[(platform, snapshot), …]``; one image only until the index exporter lands."""
    if not isinstance(images, list):
        return images
    if len(images) != 1:
        raise UserError("exporting several platforms as one image index is not implemented yet")
    return images[0][1]


def export_options(out: Output):
    """The ``ExportOptions`` an output's attributes (and ``SOURCE_DATE_EPOCH``) ask for."""
    from backend.export.image import ExportOptions  # lazy: see the module's docstring

    attrs = out.attrs
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    compression = attrs.get("compression", "gzip")
    level = int(attrs["compression-level"]) if "compression-level" in attrs else None
    sde = int(attrs.get("source-date-epoch", epoch)) if (attrs.get("source-date-epoch") or epoch) else None
    media = "oci" if attrs.get("oci-mediatypes", "true" if out.type != "docker" else "false") == "true" else "docker"
    return ExportOptions(compression=compression, level=level, source_date_epoch=sde, media_types=media)


def precompress_needs(outputs: list[Output]) -> tuple:
    """How the outputs will compress layers, for the solver to start on each new layer of the image
    while later steps run (``backend.oci.precompress``); ``IRCTL_PRECOMPRESS=0`` leaves it all to the export."""
    from backend.oci.precompress import Precompress  # lazy: see the module's docstring

    if os.environ.get("IRCTL_PRECOMPRESS", "").strip() == "0":
        return ()
    needs = []
    for out in outputs:
        if out.type not in ("oci", "docker", "registry"):
            continue
        try:
            o = export_options(out)
        except ValueError:  # reported by the export, after the build
            continue
        need = Precompress(o.compression, o.level, o.source_date_epoch)
        if o.compression in ("gzip", "zstd") and need not in needs:
            needs.append(need)
    return tuple(needs)


def _export_all(snapshot, outputs, tags, store, insecure, emit, inline=None) -> list[str]:
    from backend.errors import ExportError  # lazy: see the module's docstring

    done = []
    for out in outputs:
        attrs = dict(out.attrs)
        options = export_options(out)
        names = [n for n in attrs.get("name", "").split(",") if n] or tags
        try:
            line = _one(out.type, attrs, snapshot, store, options, names, insecure, inline)
        except ExportError as e:
            raise UserError(f"exporting {out.type}: {e}") from None
        emit(line)
        done.append({"line": line, **_held(store, out.type, attrs)})
    return done


def _held(store, kind: str, attrs: dict) -> dict:
    """``dest`` and ``what`` of a file output the export memo recorded (what a no-op rebuild checks)."""
    if kind not in ("oci", "docker", "tar") or not attrs.get("dest"):
        return {}
    from backend.export.reuse import ExportMemo  # lazy: see the module's docstring

    rec = ExportMemo(store.root).current(attrs["dest"])
    return {"dest": rec["dest"], "what": rec["what"]} if rec and "what" in rec and "dest" in rec else {}


def _one(kind: str, attrs: dict, snapshot, store, options, names: list[str], insecure, inline=None) -> str:
    spec = image_spec(snapshot)
    if inline is not None and kind in ("oci", "docker", "registry"):
        from irctl.caching import inline_cache  # lazy: only with --cache-to type=inline

        spec.extra = inline_cache(spec, inline, store.root, options)
    dest = attrs.get("dest", "")
    if kind == "oci":
        from backend.export.oci import export_oci  # lazy: see the module's docstring

        tar = attrs.get("tar", "true") != "false"
        ref = names[0].rpartition(":")[2] if names and ":" in names[0].rpartition("/")[2] else "latest"
        desc, _ = export_oci(spec, store, dest, tar=tar, ref_name=ref, image_name=names[0] if names else None,
                             options=options)
        return f"exported OCI image {desc['digest']} to {dest}"
    if kind == "docker":
        from backend.export.docker import export_docker  # lazy: see the module's docstring

        image = export_docker(spec, store, dest, names=names, options=options)
        return f"exported docker archive {image.digest} to {dest}"
    if kind == "registry":
        from backend.export.registry import export_registry  # lazy: see the module's docstring
        from backend.oci.reference import RegistryError  # lazy: see the module's docstring
        from backend.oci.registry import RegistryClient  # lazy: see the module's docstring

        if not names:
            raise UserError("pushing needs a name: -t NAME or --output type=registry,name=NAME")
        client = RegistryClient(store=store, insecure=insecure + tuple(
            n.split("/", 1)[0] for n in names if attrs.get("registry.insecure") == "true"))
        try:
            digest, _ = export_registry(spec, store, names, client, options=options)
        except RegistryError as e:
            raise UserError(f"pushing {', '.join(names)}: {e}") from None
        finally:
            client.close()
        return f"pushed {digest} to {', '.join(names)}"
    if kind == "local":
        from backend.export.local import export_local  # lazy: see the module's docstring

        export_local(spec, dest)
        return f"exported root filesystem to {dest}"
    if kind == "tar":
        from backend.export.local import export_tar_file  # lazy: see the module's docstring

        digest = export_tar_file(spec, dest, memo_root=store.root, source_date_epoch=options.source_date_epoch)
        return f"exported root filesystem tar {digest} to {dest}"
    raise UserError(f"unknown output type {kind!r}")
