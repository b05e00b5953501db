"""``type=docker``: a ``docker load``-able archive (manifest.json + repositories + blobs).

It is also a valid OCI layout (oci-layout + index.json), as Docker >= 25 writes it, so ``skopeo``
and ``umoci`` can read the same file. Layers stay compressed; ``docker load`` decompresses them.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Sequence

from backend.store.blobs import BlobStore
from backend.errors import ExportError
from backend.export.image import BuiltImage, ExportOptions, ImageSpec, build_image
from backend.export.reuse import ExportMemo, replacing, what_digest
from backend.export.archive import add_file, tar_info
from backend.oci.layout import ANNOT_IMAGE_NAME, ANNOT_REF_NAME, LAYOUT_VERSION, MT_OCI_INDEX


def _repo_tag(name: str) -> tuple[str, str]:
    """``repo[:tag]`` -> (repo, tag); a ``:`` after the last ``/`` starts the tag."""
    if "@" in name:
        raise ExportError(f"docker archive names need a tag, not a digest: {name!r}")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1:]
    return name, "latest"


def export_docker(spec: ImageSpec, store: BlobStore, dest: str | os.PathLike[str], *, names: Sequence[str] = (),
                  options: ExportOptions = ExportOptions(media_types="docker")) -> BuiltImage:
    image = build_image(spec, store, options)
    tags = [_repo_tag(n) for n in names]
    repo_tags = [f"{r}:{t}" for r, t in tags]
    blob = lambda d: "blobs/sha256/" + d.split(":", 1)[1]  # noqa: E731
    manifest_json = [{
        "Config": blob(image.manifest["config"]["digest"]),
        "RepoTags": repo_tags or None,
        "Layers": [blob(b.digest) for b in image.layers],
    }]
    repositories: dict[str, dict[str, str]] = {}
    if image.layers:
        for r, t in tags:
            repositories.setdefault(r, {})[t] = image.layers[-1].digest.split(":", 1)[1]
    index_entries = []
    for rt in repo_tags or [None]:
        d = dict(image.descriptor)
        if rt:
            d["annotations"] = {ANNOT_IMAGE_NAME: rt, ANNOT_REF_NAME: rt.rsplit(":", 1)[1]}
        index_entries.append(d)
    index = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": index_entries}
    digests = sorted({image.digest, image.manifest["config"]["digest"], *(b.digest for b in image.layers)})
    mtime = options.source_date_epoch or 0
    dest = Path(dest)
    files = (("index.json", json.dumps(index, separators=(",", ":")).encode()),
             ("manifest.json", json.dumps(manifest_json, separators=(",", ":")).encode()),
             ("oci-layout", LAYOUT_VERSION),
             ("repositories", json.dumps(repositories, separators=(",", ":")).encode()))
    memo = ExportMemo(store.root)  # the same archive already there, untouched: not written again
    what = what_digest("docker", *(data for _, data in files), b"%d" % mtime)
    if memo.unchanged(dest, what) is not None:
        return image
    with replacing(dest) as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(tar_info("blobs", mtime, tarfile.DIRTYPE, 0o755))
        tf.addfile(tar_info("blobs/sha256", mtime, tarfile.DIRTYPE, 0o755))
        for d in digests:
            p = store.path(d)
            add_file(tf, tar_info(blob(d), mtime, tarfile.REGTYPE, 0o644, p.stat().st_size), p)
        for name, data in files:
            tf.addfile(tar_info(name, mtime, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
        mine = os.fstat(f.fileno())
    memo.remember(dest, what, written={"": mine})
    return image
