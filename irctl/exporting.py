"""Send a solved snapshot to the outputs the user asked for (``--output``, ``-t``, ``--push``).

Every build imports this module; the exporters are imported when an output needs them (``# lazy:``),
each output type its own (the registry's client costs ~150 ms with httpx)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from irctl.errors import UserError
from irctl.loading import load_image, loads
from irctl.options import STDOUT, Output

ATTESTED = ("oci", "registry")  # the outputs that keep attestations (in the image index)

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


def platform_of(snapshot) -> str:
    """``os/arch[/variant]`` of a solved image (its image op's platform)."""
    meta = snapshot.image.platform if snapshot.image is not None else {}
    parts = [meta.get("os") or "linux", meta.get("architecture") or "amd64"]
    return "/".join(parts + ([meta["variant"]] if meta.get("variant") else []))


def export(images, outputs: list[Output], tags: list[str], *, cache_root: Path, insecure: tuple[str, ...],
           emit, inline=None, statements=None, annotations=None) -> list[dict]:
    """Run every output over ``images``, ``[(platform, Snapshot), …]`` in ``--platform`` order (one:
    exactly the single-manifest image of old; several: an index, or a directory per platform).
    Returns per output the line describing what was written (``line``), what buildx's
    ``--metadata-file`` says of it (``metadata``, ``irctl.metadata``) and, for a file the store's
    export memo vouches for (``backend.export.reuse``), its ``dest`` and ``what``.
    ``inline``: the solve's ``CacheLedger``, for an inline cache in every image written
    (``--cache-to type=inline``). ``statements(platform, snapshot)``: in-toto predicates
    ``[(predicate_type, predicate), …]`` to attach to that image (``--provenance``, ``--sbom``).
    ``annotations``: a ``backend.export.imageset.Annotations`` (``--annotation``)."""
    from backend.store.blobs import BlobStore  # lazy: see the module's docstring
    from backend.store.cache import CacheStore  # lazy: see the module's docstring

    _distinct_platforms([p for p, _ in images])
    store = BlobStore(cache_root)
    attested = statements is not None and any(o.type in ATTESTED for o in outputs)  # an SBOM may cost: only if kept
    said = [list(statements(p, s)) if attested else [] for p, s in images]
    if statements is not None:
        for kind in dict.fromkeys(o.type for o in outputs if o.type not in ATTESTED):
            emit(f"warning: type={kind} holds no attestations; none written there (type=oci or a push keeps them)")
    with CacheStore(cache_root).locked("gc.lock", exclusive=False):  # a concurrent prune waits for us
        return _export_all(list(images), outputs, tags, store, insecure, emit, inline, said, annotations)



def _distinct_platforms(platforms: list[str]) -> None:
    """Refuse two images one index entry or one ``linux_arm_v7/`` directory would hold: the second
    would be written over the first (``linux/arm_v7`` and ``linux/arm/v7`` share a directory; a
    graph's roots may claim one platform twice)."""
    from backend.export.local import platform_dir  # lazy: see the module's docstring

    seen: dict[str, str] = {}
    for p in platforms:
        other = seen.get(platform_dir(p))
        if other is not None:
            raise UserError(f"two images of the same platform ({other} and {p}, both {platform_dir(p)}): "
                            "an index or a per-platform directory holds one image per platform")
        seen[platform_dir(p)] = p


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


def _export_all(images, outputs, tags, store, insecure, emit, inline, said, annotations) -> list[dict]:
    from backend.errors import ExportError  # lazy: see the module's docstring
    from backend.export.imageset import Annotations  # lazy: see the module's docstring

    done = []
    for out in outputs:
        attrs = dict(out.attrs)
        options = export_options(out)
        names = [n for n in attrs.get("name", "").split(",") if n] or tags
        try:
            wanted = _annotations(annotations or Annotations(), attrs)
            if attrs.get("dest") == STDOUT:
                line, meta = _to_stdout(out.type, attrs, images, store, options, names, insecure, inline, said,
                                        wanted, emit)
            else:
                line, meta = _one(out.type, attrs, images, store, options, names, insecure, inline, said, wanted,
                                  emit)
        except ExportError as e:
            raise UserError(f"exporting {out.type}: {e}") from None
        emit(line)
        done.append({"line": line, "metadata": meta, **_held(store, out.type, attrs)})
    return done


def _to_stdout(kind: str, attrs: dict, *args) -> tuple[str, dict]:
    """buildx's ``dest=-``: the exporters write (and rename into place) only files, so the archive
    is written in a private temp dir, then copied to stdout; nothing is left behind, not even a
    record for the export memo (``_held``: no path to find it at again)."""
    import shutil  # lazy: only an output on stdout
    import tempfile  # lazy: only an output on stdout

    with tempfile.TemporaryDirectory(prefix="irctl-stdout-") as tmp:
        path = os.path.join(tmp, "out.tar")
        line, meta = _one(kind, {**attrs, "dest": path}, *args)
        with open(path, "rb") as f:
            shutil.copyfileobj(f, sys.stdout.buffer, 1 << 20)
        sys.stdout.buffer.flush()
    return line.replace(f" to {path}", " to stdout"), meta


def _annotations(given, attrs: dict):
    """``--annotation`` values and the output's own ``annotation…`` attributes (buildx's
    ``annotation-index.KEY=VALUE`` form), the attributes winning."""
    from irctl.annotations import merge_output_attrs  # lazy: see the module's docstring

    return merge_output_attrs(given, attrs)


def _held(store, kind: str, attrs: dict) -> dict:
    """``dest`` and ``what`` of a file output the export memo recorded (what a no-op rebuild checks)."""
    if kind not in ("oci", "docker", "tar") or attrs.get("dest", STDOUT) == STDOUT:
        return {}
    from backend.export.reuse import ExportMemo  # lazy: see the module's docstring

    rec = ExportMemo(store.root).current(attrs["dest"])
    return {"dest": rec["dest"], "what": rec["what"]} if rec and "what" in rec and "dest" in rec else {}


def _one(kind: str, attrs: dict, images, store, options, names: list[str], insecure, inline, said,
         annotations, emit) -> tuple[str, dict]:
    from irctl.metadata import image_metadata  # lazy: see the module's docstring

    specs = [image_spec(snapshot) for _, snapshot in images]
    several = len(specs) > 1
    if inline is not None and kind in ("oci", "docker", "registry"):
        from irctl.caching import inline_cache  # lazy: only with --cache-to type=inline

        for spec in specs:
            spec.extra = inline_cache(spec, inline, store.root, options)
    if any(said) and kind in ("oci", "registry") and options.media_types != "oci":
        from dataclasses import replace  # lazy: only with attestations and oci-mediatypes=false

        emit(f"warning: type={kind}: attestations need OCI media types; writing oci-mediatypes=true")
        options = replace(options, media_types="oci")
    dest = attrs.get("dest", "")
    if kind == "oci":
        from backend.export.oci import export_oci  # lazy: see the module's docstring

        tar = attrs.get("tar", "true") != "false"
        ref = names[0].rpartition(":")[2] if names and ":" in names[0].rpartition("/")[2] else "latest"
        desc, built = export_oci(specs, store, dest, tar=tar, ref_name=ref, image_name=names[0] if names else None,
                                 options=options, statements=said, names=names, annotations=annotations)
        what = "OCI image index" if desc["digest"] != built[0].digest else "OCI image"
        return f"exported {what} {desc['digest']} to {dest}", image_metadata(desc, built, names)
    if loads(kind, attrs):
        line, image = load_image(specs, store, names, options)
        return line, image_metadata(image.descriptor, [image], names)
    if kind == "docker":
        from backend.export.docker import export_docker  # lazy: see the module's docstring

        if several:  # buildx's own words
            raise UserError("docker exporter does not currently support exporting manifest lists")
        image = export_docker(specs[0], store, dest, names=names, options=options)
        return f"exported docker archive {image.digest} to {dest}", image_metadata(image.descriptor, [image], names)
    if kind == "registry":
        from backend.export.registry import export_registry  # lazy: see the module's docstring
        from backend.oci.reference import RegistryError  # lazy: see the module's docstring
        from backend.oci.registry import RegistryClient  # lazy: see the module's docstring

        if not names:
            raise UserError("pushing needs a name: -t NAME or --output type=registry,name=NAME")
        client = RegistryClient(store=store, insecure=insecure + tuple(
            n.split("/", 1)[0] for n in names if attrs.get("registry.insecure") == "true"))
        try:
            digest, built = export_registry(specs, store, names, client, options=options, statements=said,
                                            annotations=annotations)
        except RegistryError as e:
            raise UserError(f"pushing {', '.join(names)}: {e}") from None
        finally:
            client.close()
        top = built[0].descriptor if digest == built[0].digest else _pushed_index(store, digest)
        return f"pushed {digest} to {', '.join(names)}", image_metadata(top, built, names)
    if kind == "local":
        from backend.export.local import export_local, export_local_platforms  # lazy: see the module's docstring

        if several:
            split = attrs.get("platform-split", "true") != "false"
            export_local_platforms(list(zip([p for p, _ in images], specs)), dest, split=split)
            return f"exported {len(specs)} root filesystems to {dest}", {}
        export_local(specs[0], dest)
        return f"exported root filesystem to {dest}", {}
    if kind == "tar":
        from backend.export.local import export_tar_file  # lazy: see the module's docstring

        what = list(zip([p for p, _ in images], specs)) if several else specs[0]
        digest = export_tar_file(what, dest, memo_root=store.root, source_date_epoch=options.source_date_epoch)
        return f"exported root filesystem tar {digest} to {dest}", {}
    raise UserError(f"unknown output type {kind!r}")


def _pushed_index(store, digest: str) -> dict:
    """The descriptor of an index just pushed (its bytes are in the store)."""
    from backend.oci.layout import descriptor  # lazy: see the module's docstring

    raw = store.read_bytes(digest)
    return descriptor(json.loads(raw)["mediaType"], raw)
