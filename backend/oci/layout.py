"""OCI image layouts (``oci-layout`` + ``index.json`` + ``blobs/``): read one and pick an image
(``backend.export.oci`` writes them).

Also home of the OCI/Docker media types and platform matching shared by the registry client and the
exporters, since both speak the same manifest/index vocabulary. Layouts are read from a directory
or straight from a tar (random access, nothing unpacked); every blob read is checked against its digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform as _host
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from backend.errors import BackendError

if TYPE_CHECKING:
    from backend.store.blobs import BlobStore

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
INDEX_TYPES = (MT_OCI_INDEX, MT_DOCKER_LIST)
MANIFEST_TYPES = (MT_OCI_MANIFEST, MT_DOCKER_MANIFEST)
ANNOT_REF_NAME = "org.opencontainers.image.ref.name"
ANNOT_IMAGE_NAME = "io.containerd.image.name"  # what buildx/containerd put beside ref.name
LAYOUT_VERSION = b'{"imageLayoutVersion":"1.0.0"}'


class LayoutError(BackendError):
    """An OCI layout is missing, malformed, or has no image matching the request."""


_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
         "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "i686": "386", "i386": "386"}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> "Platform":
        """``linux/arm64/v8`` style."""
        parts = text.strip().split("/")
        if len(parts) < 2 or len(parts) > 3 or not all(parts):
            raise LayoutError(f"bad platform {text!r}: want os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def from_dict(cls, d: dict) -> "Platform":
        return cls(d.get("os", ""), d.get("architecture", ""), d.get("variant") or None)

    @classmethod
    def host(cls) -> "Platform":
        arch = _ARCH.get(_host.machine(), _host.machine())
        return cls("linux", arch, "v7" if arch == "arm" else None)

    def matches(self, other: dict | None) -> bool:
        """Does a descriptor's ``platform`` satisfy this request? A request without variant takes any;
        arm64 treats a missing variant as v8."""
        if not other:
            return False
        o = Platform.from_dict(other)
        if (o.os, o.architecture) != (self.os, self.architecture):
            return False
        if self.variant is None:
            return True
        ov = o.variant or ("v8" if o.architecture == "arm64" else None)
        return ov == self.variant

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def select_manifest(index: dict, platform: Platform, where: str = "index") -> dict:
    """The descriptor in ``index`` for ``platform``; prefers an exact variant match, skips attestations."""
    cands = [d for d in index.get("manifests", []) if platform.matches(d.get("platform"))]
    if not cands:
        have = sorted({str(Platform.from_dict(d["platform"])) for d in index.get("manifests", [])
                       if d.get("platform")})
        raise LayoutError(f"{where}: no image for platform {platform} (available: {', '.join(have) or 'none'})")
    return cands[0]


def descriptor(media_type: str, data: bytes, **extra: object) -> dict:
    d: dict = {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data)}
    d.update({k: v for k, v in extra.items() if v})
    return d


def canonical_json(obj: object) -> bytes:
    """The bytes we hash for configs/manifests/indexes: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class ImageRef:
    """A manifest found in a layout (or a registry): its descriptor, parsed body and raw bytes."""

    descriptor: dict
    manifest: dict
    raw: bytes

    @property
    def config_digest(self) -> str:
        return self.manifest["config"]["digest"]

    @property
    def layers(self) -> list[dict]:
        return list(self.manifest.get("layers", []))


class OCILayout:
    """Read access to a layout directory or tar."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._tar: tarfile.TarFile | None = None
        if self.path.is_dir():
            if not (self.path / "oci-layout").is_file():
                raise LayoutError(f"{self.path}: not an OCI layout (no oci-layout file)")
        elif self.path.is_file():
            try:
                self._tar = tarfile.open(self.path, "r:*")
            except tarfile.TarError as e:
                raise LayoutError(f"{self.path}: not a tar: {e}") from None
            self._members = {m.name.removeprefix("./"): m
                             for m in self._tar.getmembers() if m.isreg()}
            if "oci-layout" not in self._members:
                raise LayoutError(f"{self.path}: tar is not an OCI layout (no oci-layout entry)")
        else:
            raise LayoutError(f"{self.path}: no such layout")
        try:
            self.index = json.loads(self._read("index.json"))
        except (KeyError, FileNotFoundError, ValueError) as e:
            raise LayoutError(f"{self.path}: bad or missing index.json ({e})") from None

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()

    def __enter__(self) -> "OCILayout":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self, name: str) -> BinaryIO:
        if self._tar is None:  # a regular file only: a FIFO or device planted in a layout would hang or flood a read
            fd = os.open(self.path / name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise LayoutError(f"{self.path}: {name} is not a regular file")
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        f = self._tar.extractfile(self._members[name])
        assert f is not None
        return f  # type: ignore[return-value]

    def _read(self, name: str) -> bytes:
        with self._open(name) as f:
            return f.read()

    def _blob_name(self, digest: str) -> str:
        algo, _, hexd = digest.partition(":")
        if algo != "sha256" or len(hexd) != 64 or not all(c in "0123456789abcdef" for c in hexd):
            raise LayoutError(f"unsupported digest {digest!r}")
        return f"blobs/sha256/{hexd}"

    def open_blob(self, digest: str) -> BinaryIO:
        try:
            return self._open(self._blob_name(digest))
        except (KeyError, FileNotFoundError):
            raise LayoutError(f"{self.path}: blob {digest} missing") from None

    def read_blob(self, digest: str) -> bytes:
        with self.open_blob(digest) as f:
            data = f.read()
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise LayoutError(f"{self.path}: blob {digest} does not match its digest")
        return data

    def refs(self) -> list[str]:
        return [d.get("annotations", {}).get(ANNOT_REF_NAME, "") for d in self.index.get("manifests", [])]

    def resolve(self, ref: str | None = None, platform: Platform | None = None) -> ImageRef:
        """Pick one image manifest: by ref name annotation (if given), then by platform through
        (nested) indexes. With a single top-level entry and no ref, that entry is used."""
        entries = self.index.get("manifests", [])
        if ref is not None:
            entries = [d for d in entries if d.get("annotations", {}).get(ANNOT_REF_NAME) == ref
                       or d.get("annotations", {}).get(ANNOT_IMAGE_NAME) == ref]
            if not entries:
                raise LayoutError(f"{self.path}: no image named {ref!r} (have: {', '.join(filter(None, self.refs())) or 'none'})")
        if not entries:
            raise LayoutError(f"{self.path}: index.json lists no manifests")
        plat = platform or Platform.host()
        if len(entries) > 1:
            desc = select_manifest({"manifests": entries}, plat, f"{self.path}/index.json")
        else:
            desc = entries[0]
        for _ in range(8):  # nested indexes, bounded
            raw = self.read_blob(desc["digest"])
            body = json.loads(raw)
            mt = desc.get("mediaType") or body.get("mediaType")
            if mt in INDEX_TYPES or "manifests" in body:
                desc = select_manifest(body, plat, f"{self.path} index {desc['digest']}")
                continue
            return ImageRef(desc, body, raw)
        raise LayoutError(f"{self.path}: indexes nested too deeply")

    def copy_to_store(self, image: ImageRef, store: "BlobStore") -> None:
        """Copy an image's manifest, config and layers into a BlobStore (verified)."""
        store.write_bytes(image.raw)
        for d in [image.manifest["config"], *image.layers]:
            if not store.has(d["digest"]):
                with self.open_blob(d["digest"]) as f:
                    store.ingest(f, d["digest"], d.get("size"))
