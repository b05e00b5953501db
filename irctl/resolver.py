"""The ``ImageResolver`` a frontend is handed: answers "which digest, which config?" for base
images from the registry client or a granted OCI layout.  It lives in the CLI because it is glue:
the frontends define the question, the backend knows how to answer it.

Like ``docker build`` without ``--pull``, a registry image resolved once is reused from the cache
store (``resolved/``, one small JSON file per reference and platform, written atomically) until
``--pull`` asks for the registry again; a cached rebuild then needs no network at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from backend.fs.safefs import private_dir
from frontends import ResolvedImage
from ir import ops
from irctl.errors import UserError


def _platform(p: ops.Platform):
    from backend.oci.layout import Platform  # lazy: only an image resolved afresh needs it (~15 ms)

    return Platform(p.os, p.architecture, p.variant or None) if p.variant else Platform(p.os, p.architecture)


def remembered_images(cache_root: Path) -> tuple[str, ...]:
    """The manifest (or index) digests of every registry image resolved into ``cache_root``."""
    found = []
    for memo in sorted((cache_root / "resolved").glob("*.json")):
        image = Resolver._recall(memo)
        if image is not None:
            found.append(image.digest)
    return tuple(found)


class Resolver:
    def __init__(self, cache_root: Path, oci_layouts: dict[str, Path], insecure: tuple[str, ...] = (),
                 pull: bool = False) -> None:
        self.cache_root = cache_root
        self.oci_layouts = oci_layouts
        self.insecure = insecure
        self.pull = pull
        self._client = None
        self._seen: dict[tuple, ResolvedImage] = {}

    def _registry(self):
        if self._client is None:
            from backend.oci.registry import RegistryClient  # lazy: ~150 ms with httpx; a resolved image needs none
            from backend.store.blobs import BlobStore  # lazy: as RegistryClient

            self._client = RegistryClient(store=BlobStore(self.cache_root), insecure=self.insecure)
        return self._client

    def resolve_image(self, ref: str, platform: ops.Platform) -> ResolvedImage:
        key = ("image", ref, platform)
        if key not in self._seen:
            memo = self._memo_path(ref, platform)
            found = None if self.pull else self._recall(memo)
            if found is None:
                from backend.oci.reference import RegistryError  # lazy: as in _registry

                try:
                    r = self._registry().resolve(ref, _platform(platform))
                except RegistryError as e:
                    raise UserError(f"resolving {ref}: {e}") from None
                found = ResolvedImage(str(r.reference), r.manifest_digest, r.config, platform)
                self._remember(memo, found)
            self._seen[key] = found
        return self._seen[key]

    def _memo_path(self, ref: str, platform: ops.Platform) -> Path:
        name = hashlib.sha256(f"{ref}\0{platform.os}/{platform.architecture}/{platform.variant}".encode()).hexdigest()
        return self.cache_root / "resolved" / f"{name}.json"

    @staticmethod
    def _recall(path: Path) -> ResolvedImage | None:
        try:
            d = json.loads(path.read_text())
            return ResolvedImage(d["ref"], d["digest"], d["config"], ops.Platform(**d["platform"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @staticmethod
    def _remember(path: Path, image: ResolvedImage) -> None:
        private_dir(path.parent)
        p = image.platform
        data = json.dumps({"ref": image.ref, "digest": image.digest, "config": image.config,
                           "platform": {"os": p.os, "architecture": p.architecture, "variant": p.variant}})
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            f.write(data)
        os.replace(tmp, path)

    def resolve_oci_layout(self, name: str, ref: str, platform: ops.Platform) -> ResolvedImage:
        key = ("oci", name, ref, platform)
        if key not in self._seen:
            from backend.oci.layout import LayoutError, OCILayout  # lazy: only for oci-layout:// contexts (~15 ms)

            path = self.oci_layouts.get(name)
            if path is None:
                raise UserError(f"OCI layout {name!r} was not granted (--build-context {name}=oci-layout://PATH)")
            try:
                with OCILayout(path) as layout:
                    image = layout.resolve(ref or None, _platform(platform))
                    config = json.loads(layout.read_blob(image.config_digest))
            except LayoutError as e:
                raise UserError(str(e)) from None
            self._seen[key] = ResolvedImage(f"oci-layout://{name}", image.descriptor["digest"], config, platform)
        return self._seen[key]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
