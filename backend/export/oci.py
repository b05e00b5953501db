"""``type=oci``: the image as an OCI image layout, a tar by default or a directory with ``tar=False``."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
from pathlib import Path
from typing import Iterable, Sequence

from backend.export.archive import add_file, tar_info
from backend.errors import ExportError
from backend.export.image import BuiltImage, ExportOptions, ImageSpec
from backend.export.imageset import Annotations, build_set, platform_string
from backend.export.reuse import ExportMemo, refuse_link, replacing, what_digest
from backend.oci.layout import (ANNOT_IMAGE_NAME, ANNOT_REF_NAME, INDEX_TYPES, LAYOUT_VERSION, MANIFEST_TYPES,
                                MT_OCI_INDEX)
from backend.store.blobs import BlobStore


def export_oci(specs: ImageSpec | Sequence[ImageSpec], store: BlobStore, dest: str | os.PathLike[str], *,
               tar: bool = True, ref_name: str | None = None, image_name: str | None = None,
               options: ExportOptions = ExportOptions(), statements: Sequence[Sequence[tuple[str, dict]]] = (),
               names: Sequence[str] = (), annotations: Annotations = Annotations()) -> tuple[dict, list[BuiltImage]]:
    """Build the image(s) and write a layout at ``dest``; several specs (platforms), or statements
    about them, go under one index (``backend.export.imageset``).

    ``ref_name`` becomes the ``org.opencontainers.image.ref.name`` annotation (e.g. ``latest``),
    ``image_name`` the ``io.containerd.image.name`` one; ``names`` are the statements' subjects.
    The layout's ``index.json`` entry also takes the ``manifest-descriptor`` annotations (one
    image, no index) or the ``index-descriptor`` ones. Returns the top descriptor and the images.
    """
    specs = [specs] if isinstance(specs, ImageSpec) else list(specs)
    built = build_set(specs, store, options, statements=statements, names=names, annotations=annotations)
    top = dict(built.top)
    if built.is_index:
        ann = dict(annotations.index_descriptor)
    elif annotations.index_descriptor:
        raise ExportError("index-descriptor annotations need an index (several platforms, or an attestation)")
    else:
        ann = annotations.for_platform(annotations.manifest_descriptor, platform_string(specs[0].platform))
    if ref_name:
        ann[ANNOT_REF_NAME] = ref_name
    if image_name:
        ann[ANNOT_IMAGE_NAME] = image_name
    if ann:
        top["annotations"] = ann
    mtime = options.source_date_epoch or 0
    write_layout(Path(dest), store, [top], tar=tar, mtime=mtime)
    return top, built.images


def _collect(store: BlobStore, desc: dict, out: dict[str, None]) -> None:
    """Every blob reachable from ``desc`` (manifest or index), children after parents."""
    digest = desc["digest"]
    if digest in out:
        return
    out[digest] = None
    mt = desc.get("mediaType", "")
    if mt in INDEX_TYPES or mt in MANIFEST_TYPES:
        body = json.loads(store.read_bytes(digest))
        for child in body.get("manifests", []):
            _collect(store, child, out)
        if "config" in body:
            out.setdefault(body["config"]["digest"], None)
        for layer in body.get("layers", []):
            out.setdefault(layer["digest"], None)


def write_layout(dest: str | os.PathLike[str], store: BlobStore, manifests: Iterable[dict], *, tar: bool = True,
                 mtime: int = 0) -> Path:
    """Write an OCI layout holding ``manifests`` (descriptors, with ref-name annotations if wanted)
    and every blob they reach, taken from ``store``. ``tar=True`` writes one tar file (as buildx's
    ``type=oci``), else a directory (``tar=false``). The tar is deterministic. A layout already at
    ``dest`` with the same index, untouched since we wrote it, is left as it is
    (``backend.export.reuse``)."""
    manifests = list(manifests)
    blobs: dict[str, None] = {}
    for d in manifests:
        _collect(store, d, blobs)
    index = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": manifests}
    index_bytes = json.dumps(index, indent=None, separators=(",", ":")).encode()
    dest = Path(dest)
    memo = ExportMemo(store.root)
    what = what_digest("oci-tar" if tar else "oci-dir", index_bytes, b"%d" % mtime)
    if memo.unchanged(dest, what) is not None:
        return dest
    if not tar:
        members, index_st = _write_layout_dir(dest, store, sorted(blobs), index_bytes)
        memo.remember(dest, what, members, written={"index.json": index_st})
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with replacing(dest) as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tf:
        def add_dir(name: str) -> None:
            ti = tar_info(name, mtime, tarfile.DIRTYPE, 0o755)
            tf.addfile(ti)

        def add_bytes(name: str, data: bytes) -> None:
            ti = tar_info(name, mtime, tarfile.REGTYPE, 0o644, len(data))
            tf.addfile(ti, io.BytesIO(data))

        add_dir("blobs")
        add_dir("blobs/sha256")
        for digest in sorted(blobs):
            p = store.path(digest)
            ti = tar_info("blobs/sha256/" + digest.split(":", 1)[1], mtime, tarfile.REGTYPE, 0o644, p.stat().st_size)
            add_file(tf, ti, p)
        add_bytes("index.json", index_bytes)
        add_bytes("oci-layout", LAYOUT_VERSION)
        mine = os.fstat(f.fileno())
    memo.remember(dest, what, written={"": mine})
    return dest


def _write_layout_dir(dest: Path, store: BlobStore, digests: list[str], index_bytes: bytes
                      ) -> tuple[list[str], os.stat_result]:
    """The directory form; returns the paths written and the fstat of the index written (for
    ``ExportMemo``). A blob already there is
    kept when it is the store's own file (a hard link) or hashes to its name; anything else there —
    a symlink, a stale or foreign file — is replaced by rename, never written through. A symlink in
    place of ``blobs/`` or ``blobs/sha256/`` is refused."""
    dest.mkdir(parents=True, exist_ok=True)
    for sub in (dest / "blobs", dest / "blobs" / "sha256"):
        refuse_link(sub, "a directory of the layout")
        sub.mkdir(exist_ok=True)
    members = ["", "blobs", "blobs/sha256"]
    for digest in digests:
        rel = "blobs/sha256/" + digest.split(":", 1)[1]
        target, src = dest / rel, store.path(digest)
        members.append(rel)
        if _same_blob(target, src, digest):
            continue
        tmp = target.with_name(f".{target.name}.{os.getpid()}.link")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        try:
            os.link(src, tmp)
            os.replace(tmp, target)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            with open(src, "rb") as r, replacing(target, 0o644) as w:
                shutil.copyfileobj(r, w, 1 << 20)
    with replacing(dest / "oci-layout", 0o644) as f:
        f.write(LAYOUT_VERSION)
    with replacing(dest / "index.json", 0o644) as f:
        f.write(index_bytes)
        index_st = os.fstat(f.fileno())
    return members + ["oci-layout", "index.json"], index_st


def _same_blob(target: Path, src: Path, digest: str) -> bool:
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    ref = os.stat(src)
    if (st.st_dev, st.st_ino) == (ref.st_dev, ref.st_ino):
        return True
    if st.st_size != ref.st_size:
        return False
    try:  # a copy (another filesystem): only its bytes can say
        f = os.fdopen(os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb")
    except OSError:
        return False
    with f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest() == digest
