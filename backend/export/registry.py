"""``type=registry``: push the image under one or several names (one platform: a manifest;
several: each manifest by digest, then an index under the tags)."""

from __future__ import annotations

from typing import Sequence

from backend.store.blobs import BlobStore
from backend.errors import ExportError
from backend.export.image import BuiltImage, ExportOptions, ImageSpec, build_image, build_index
from backend.oci.reference import parse_reference
from backend.oci.registry import RegistryClient


def export_registry(specs: ImageSpec | Sequence[ImageSpec], store: BlobStore, names: Sequence[str],
                    client: RegistryClient, *, options: ExportOptions = ExportOptions(),
                    mount_from: dict[str, str] | None = None) -> tuple[str, list[BuiltImage]]:
    """Build and push; returns the pushed top-level digest (manifest or index) and the images.

    ``mount_from`` maps blob digest -> repository on the same registry to mount it from; blobs the
    client pulled itself during this process are mounted automatically.
    """
    if not names:
        raise ExportError("registry export needs at least one image name")
    refs = [parse_reference(n) for n in names]
    for r in refs:
        if r.digest:
            raise ExportError(f"cannot push to a digest reference: {r}")
    specs = [specs] if isinstance(specs, ImageSpec) else list(specs)
    images = [build_image(s, store, options) for s in specs]
    top = ""
    for ref in refs:
        for img in images:
            tag = ref.tag if len(images) == 1 else img.digest
            top = client.push_image(ref, img.manifest_bytes, img.media_type, mount_from=mount_from, tag=tag)
        if len(images) > 1:
            desc, raw = build_index(images, store)
            top = client.push_manifest(ref, raw, desc["mediaType"], tag=ref.tag)
    return top, images
