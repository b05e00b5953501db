"""``type=registry``: push the image under one or several names (one platform: a manifest;
several, or attestations: each manifest by digest, then an index under the tags)."""

from __future__ import annotations

from typing import Sequence

from backend.store.blobs import BlobStore
from backend.errors import ExportError
from backend.export.image import BuiltImage, ExportOptions, ImageSpec
from backend.export.imageset import Annotations, build_set
from backend.oci.reference import parse_reference
from backend.oci.registry import RegistryClient


def export_registry(specs: ImageSpec | Sequence[ImageSpec], store: BlobStore, names: Sequence[str],
                    client: RegistryClient, *, options: ExportOptions = ExportOptions(),
                    mount_from: dict[str, str] | None = None, statements: Sequence[Sequence[tuple[str, dict]]] = (),
                    annotations: Annotations = Annotations()) -> tuple[str, list[BuiltImage]]:
    """Build and push; returns the pushed top-level digest (manifest or index) and the images.

    With an index (``backend.export.imageset``: several platforms, or statements about them), each
    image manifest and attestation manifest is pushed by digest, then the index under each tag.
    ``mount_from`` maps blob digest -> repository on the same registry to mount it from; blobs the
    client pulled itself during this process are mounted automatically.
    """
    if not names:
        raise ExportError("registry export needs at least one image name")
    refs = [parse_reference(n) for n in names]
    for r in refs:
        if r.digest:
            raise ExportError(f"cannot push to a digest reference: {r}")
    if annotations.index_descriptor:
        raise ExportError("index-descriptor annotations belong to an OCI layout (type=oci), not a registry")
    specs = [specs] if isinstance(specs, ImageSpec) else list(specs)
    built = build_set(specs, store, options, statements=statements, names=names, annotations=annotations)
    top = ""
    for ref in refs:
        if not built.is_index:
            img = built.images[0]
            top = client.push_image(ref, img.manifest_bytes, img.media_type, mount_from=mount_from, tag=ref.tag)
            continue
        for img in built.images:
            client.push_image(ref, img.manifest_bytes, img.media_type, mount_from=mount_from, tag=img.digest)
        for att in built.attestations:
            client.push_image(ref, store.read_bytes(att["digest"]), att["mediaType"], tag=att["digest"])
        top = client.push_manifest(ref, built.top_bytes, built.top["mediaType"], tag=ref.tag)
    return top, built.images
