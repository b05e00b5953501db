"""Several platforms' images and what is attached to them, as the one object a tag names.

One image with nothing attached stays a single manifest (what one image always gave, byte for
byte). Anything more becomes an index — an OCI index, or a Docker manifest list with Docker media
types — listing each image manifest with its platform, then, as BuildKit stores attestations
(docs.docker.com/build/metadata/attestations/attestation-storage), one attestation manifest per
image that has statements: an OCI manifest whose layers are in-toto statements
(``application/vnd.in-toto+json``, each annotated with its predicate type), listed with platform
``unknown/unknown`` and the ``vnd.docker.reference.*`` annotations naming the image it describes.
An attestation needs an index, so one platform with a statement gets one too (as BuildKit does).

Annotations (``--annotation``) go where buildx puts them: ``manifest`` on an image manifest,
``manifest-descriptor`` on its descriptor in the index, ``index`` on the index; each may be limited
to one platform. ``index-descriptor`` is the layout's business (``backend.export.oci``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence
from urllib.parse import quote

from backend.errors import ExportError
from backend.export.image import BuiltImage, ExportOptions, ImageSpec, build_image
from backend.oci.layout import (MT_DOCKER_LIST, MT_OCI_CONFIG, MT_OCI_INDEX, MT_OCI_MANIFEST,
                                canonical_json, descriptor)
from backend.store.blobs import BlobStore

MT_IN_TOTO = "application/vnd.in-toto+json"
IN_TOTO_STATEMENT = "https://in-toto.io/Statement/v0.1"
ANNOT_PREDICATE_TYPE = "in-toto.io/predicate-type"
ANNOT_REF_TYPE = "vnd.docker.reference.type"
ANNOT_REF_DIGEST = "vnd.docker.reference.digest"
REF_TYPE_ATTESTATION = "attestation-manifest"
UNKNOWN_PLATFORM = {"architecture": "unknown", "os": "unknown"}


@dataclass(frozen=True)
class Annotations:
    """Annotation values by where they go; the per-image ones keyed by platform string
    (``linux/arm64``), ``""`` meaning every platform."""

    manifest: dict[str, dict[str, str]] = field(default_factory=dict)
    manifest_descriptor: dict[str, dict[str, str]] = field(default_factory=dict)
    index: dict[str, str] = field(default_factory=dict)
    index_descriptor: dict[str, str] = field(default_factory=dict)

    def for_platform(self, where: dict[str, dict[str, str]], platform: str) -> dict[str, str]:
        return {**where.get("", {}), **where.get(platform, {})}

    def __bool__(self) -> bool:
        return bool(self.manifest or self.manifest_descriptor or self.index or self.index_descriptor)


@dataclass(frozen=True)
class ImageSet:
    """What was written to the store: the images, in the order given, and the top object."""

    images: list[BuiltImage]
    top: dict  # descriptor of the single manifest, or of the index
    top_bytes: bytes
    attestations: list[dict] = field(default_factory=list)  # their descriptors, as listed in the index

    @property
    def is_index(self) -> bool:
        return self.top["digest"] != self.images[0].digest


def platform_string(platform: dict) -> str:
    """``os/arch[/variant]`` of a descriptor's or config's platform."""
    parts = [platform.get("os", "linux"), platform.get("architecture", "amd64")]
    return "/".join(parts + ([platform["variant"]] if platform.get("variant") else []))


def build_set(specs: Sequence[ImageSpec], store: BlobStore, options: ExportOptions = ExportOptions(), *,
              statements: Sequence[Sequence[tuple[str, dict]]] = (), names: Sequence[str] = (),
              annotations: Annotations = Annotations()) -> ImageSet:
    """Build every image and, when needed, the index over them (see the module's docstring).
    ``statements[i]``: ``(predicate_type, predicate)`` pairs about image ``i``; its subjects are
    the image's names (``names``, as BuildKit's ``pkg:docker/…`` purls), or ``_`` without one."""
    if not specs:
        raise ExportError("no image to export")
    statements = list(statements) + [()] * (len(specs) - len(statements))
    if any(statements) and options.media_types != "oci":
        raise ExportError("attestations need OCI media types (oci-mediatypes=true)")
    images = []
    for spec in specs:
        wanted = annotations.for_platform(annotations.manifest, platform_string(spec.platform))
        if wanted and options.media_types != "oci":
            raise ExportError("manifest annotations need OCI media types (oci-mediatypes=true)")
        if wanted:
            spec = replace(spec, annotations={**spec.annotations, **wanted})
        images.append(build_image(spec, store, options))
    if len(images) == 1 and not any(statements):
        if annotations.index:  # BuildKit's refusal: an annotation must not turn one image into an index
            raise ExportError("index annotations not supported for single platform export")
        return ImageSet(images, dict(images[0].descriptor), images[0].manifest_bytes)
    docker = options.media_types == "docker"
    if docker and (annotations.index or annotations.manifest_descriptor):
        raise ExportError("index annotations need OCI media types (oci-mediatypes=true)")
    entries, attested = [], []
    listed: set[str] = set()
    for image in images:
        d = dict(image.descriptor)
        plat = platform_string(d.get("platform", {}))
        if plat in listed:  # a reader picks one by platform: the other would be unreachable
            raise ExportError(f"two images are {plat} (a last stage `FROM --platform={plat}`?): an index "
                              f"would list {plat} twice")
        listed.add(plat)
        extra = annotations.for_platform(annotations.manifest_descriptor, platform_string(d.get("platform", {})))
        if extra:
            d["annotations"] = extra
        entries.append(d)
    for image, said in zip(images, statements):
        if said:
            attested.append(_attestation_manifest(image, said, names, store))
    index: dict = {"schemaVersion": 2, "mediaType": MT_DOCKER_LIST if docker else MT_OCI_INDEX,
                   "manifests": entries + attested}
    if annotations.index:
        index["annotations"] = dict(annotations.index)
    raw = canonical_json(index)
    store.write_bytes(raw)
    return ImageSet(images, descriptor(index["mediaType"], raw), raw, attested)


def statement(predicate_type: str, predicate: dict, image: BuiltImage, names: Sequence[str]) -> dict:
    """An in-toto statement about ``image`` (its manifest digest), named as BuildKit names it."""
    sha = image.digest.split(":", 1)[1]
    plat = platform_string(image.descriptor.get("platform", {}))
    subjects = [{"name": docker_purl(n, plat), "digest": {"sha256": sha}} for n in names]
    return {"_type": IN_TOTO_STATEMENT, "predicateType": predicate_type,
            "subject": subjects or [{"name": "_", "digest": {"sha256": sha}}], "predicate": predicate}


def docker_purl(name: str, platform: str) -> str:
    """An image name as BuildKit's package URL: ``pkg:docker/REPO@TAG?platform=OS%2FARCH``, the
    repository in its familiar form (``busybox``, not ``docker.io/library/busybox``), no tag: ``latest``."""
    name = name.split("@", 1)[0]
    slash, colon = name.rfind("/"), name.rfind(":")
    repo, tag = (name[:colon], name[colon + 1:]) if colon > slash else (name, "latest")
    for prefix in ("docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/"):
        if repo.startswith(prefix):
            repo = repo[len(prefix):]
            break
    return f"pkg:docker/{repo}@{tag}?platform={quote(platform, safe='')}"


def _attestation_manifest(image: BuiltImage, said: Sequence[tuple[str, dict]], names: Sequence[str],
                          store: BlobStore) -> dict:
    """Write one attestation manifest for ``image``; returns its descriptor for the index."""
    layers = []
    for predicate_type, predicate in said:
        body = canonical_json(statement(predicate_type, predicate, image, names))
        store.write_bytes(body)
        layers.append(descriptor(MT_IN_TOTO, body, annotations={ANNOT_PREDICATE_TYPE: predicate_type}))
    config = canonical_json({**UNKNOWN_PLATFORM, "config": {},
                             "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in layers]}})
    store.write_bytes(config)
    manifest = canonical_json({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
                               "config": descriptor(MT_OCI_CONFIG, config), "layers": layers})
    store.write_bytes(manifest)
    return descriptor(MT_OCI_MANIFEST, manifest, platform=dict(UNKNOWN_PLATFORM),
                      annotations={ANNOT_REF_DIGEST: image.digest, ANNOT_REF_TYPE: REF_TYPE_ATTESTATION})


def is_attestation(desc: dict) -> bool:
    return desc.get("annotations", {}).get(ANNOT_REF_TYPE) == REF_TYPE_ATTESTATION

