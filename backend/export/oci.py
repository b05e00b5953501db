"""``type=oci``: the image as an OCI image layout, a tar by default or a directory with ``tar=False``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from backend.blobs import BlobStore
from backend.export.image import BuiltImage, ExportOptions, ImageSpec, build_image, build_index
from backend.oci_layout import ANNOT_IMAGE_NAME, ANNOT_REF_NAME, write_layout


def export_oci(specs: ImageSpec | Sequence[ImageSpec], store: BlobStore, dest: str | os.PathLike[str], *,
               tar: bool = True, ref_name: str | None = None, image_name: str | None = None,
               options: ExportOptions = ExportOptions()) -> tuple[dict, list[BuiltImage]]:
    """Build the image(s) and write a layout at ``dest``; several specs (platforms) go under one index.

    ``ref_name`` becomes the ``org.opencontainers.image.ref.name`` annotation (e.g. ``latest``),
    ``image_name`` the ``io.containerd.image.name`` one. Returns the top descriptor and the images.
    """
    specs = [specs] if isinstance(specs, ImageSpec) else list(specs)
    images = [build_image(s, store, options) for s in specs]
    if len(images) == 1:
        top = dict(images[0].descriptor)
    else:
        top, _ = build_index(images, store)
    ann = {}
    if ref_name:
        ann[ANNOT_REF_NAME] = ref_name
    if image_name:
        ann[ANNOT_IMAGE_NAME] = image_name
    if ann:
        top["annotations"] = ann
    mtime = options.source_date_epoch or 0
    write_layout(Path(dest), store, [top], tar=tar, mtime=mtime)
    return top, images
