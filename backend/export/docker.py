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
from typing import Iterator, Sequence

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
    archive = DockerArchive(image, store, names, options.source_date_epoch or 0)
    dest = Path(dest)
    memo = ExportMemo(store.root)  # the same archive already there, untouched: not written again
    what = what_digest("docker", *(data for _, data in archive.files), b"%d" % archive.mtime)
    if memo.unchanged(dest, what) is not None:
        return image
    with replacing(dest) as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, source in archive.entries():
            if isinstance(source, Path):
                add_file(tf, ti, source)
            else:
                tf.addfile(ti, None if source is None else io.BytesIO(source))
        mine = os.fstat(f.fileno())
    memo.remember(dest, what, written={"": mine})
    return image


class DockerArchive:
    """The entries of an image's archive, in order: written to a file by ``export_docker``, or streamed
    (``chunks``) to an engine's ``docker load`` without being held in memory or on disk (``backend.export.load``)."""

    def __init__(self, image: BuiltImage, store: BlobStore, names: Sequence[str], mtime: int) -> None:
        self.image, self.store, self.mtime = image, store, mtime
        tags = [_repo_tag(n) for n in names]
        repo_tags = [f"{r}:{t}" for r, t in tags]
        manifest_json = [{
            "Config": _blob(image.manifest["config"]["digest"]),
            "RepoTags": repo_tags or None,
            "Layers": [_blob(b.digest) for b in image.layers],
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
        self.digests = sorted({image.digest, image.manifest["config"]["digest"], *(b.digest for b in image.layers)})
        self.files = (("index.json", json.dumps(index, separators=(",", ":")).encode()),
                      ("manifest.json", json.dumps(manifest_json, separators=(",", ":")).encode()),
                      ("oci-layout", LAYOUT_VERSION),
                      ("repositories", json.dumps(repositories, separators=(",", ":")).encode()))

    def entries(self) -> Iterator[tuple[tarfile.TarInfo, Path | bytes | None]]:
        """Each member's header and where its body comes from (a blob in the store, bytes, or none)."""
        yield tar_info("blobs", self.mtime, tarfile.DIRTYPE, 0o755), None
        yield tar_info("blobs/sha256", self.mtime, tarfile.DIRTYPE, 0o755), None
        for d in self.digests:
            p = self.store.path(d)
            yield tar_info(_blob(d), self.mtime, tarfile.REGTYPE, 0o644, p.stat().st_size), p
        for name, data in self.files:
            yield tar_info(name, self.mtime, tarfile.REGTYPE, 0o644, len(data)), data

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        """The archive's bytes, exactly as ``export_docker`` writes them, a piece at a time. A blob that
        changed size under us ends the stream with an error rather than a corrupt member."""
        sent = 0
        for ti, source in self.entries():
            header = ti.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")
            sent += len(header)
            yield header
            if source is None:
                continue
            if isinstance(source, bytes):
                yield source
            else:
                left = ti.size
                with open(source, "rb") as f:
                    while left > 0:
                        chunk = f.read(min(left, size))
                        if not chunk:
                            raise ExportError(f"{source}: blob shrank while being sent")
                        left -= len(chunk)
                        yield chunk
            pad = -ti.size % tarfile.BLOCKSIZE
            sent += ti.size + pad
            yield tarfile.NUL * pad
        end = 2 * tarfile.BLOCKSIZE  # end of archive, then padding to a whole record, as tarfile.close()
        yield tarfile.NUL * (end + -(sent + end) % tarfile.RECORDSIZE)


def _blob(digest: str) -> str:
    return "blobs/sha256/" + digest.split(":", 1)[1]
