"""The arm64 test base: Debian's ``busybox-static:arm64`` as an OCI image, and an index holding it
beside the amd64 one, in the test registry.  Its steps run under QEMU through binfmt_misc.

``setup.sh`` downloads the package (``apt-get download busybox-static:arm64``) and leaves its
binary at ``ARM64_BUSYBOX``; it also installs and registers QEMU.  Where either is missing the tests
using these fixtures are skipped with the reason — except in CI (``CI=true``), where a missing
piece of the set-up is a failure, so a broken runner cannot pass by skipping them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import skip_unless_ci
from tests.support.baseimage import make_busybox_layout

ARM64_BUSYBOX = Path(os.environ.get("IRCTL_TEST_ARM64_BUSYBOX", "/var/cache/irctl-test/arm64/busybox"))
BINFMT = Path("/proc/sys/fs/binfmt_misc")
INDEX = "application/vnd.oci.image.index.v1+json"


def missing() -> str | None:
    """Why arm64 steps cannot run here, or None."""
    if not ARM64_BUSYBOX.is_file():
        return f"{ARM64_BUSYBOX} missing (setup.sh fetches Debian's busybox-static:arm64)"
    from backend.oci.layout import Platform
    from backend.runtime.emulation import EmulationError, check

    try:
        check("linux/arm64", Platform.host().architecture, binfmt_dir=BINFMT)
    except EmulationError as e:
        return str(e)
    return None


def require() -> None:
    """Skip (fail in CI) unless arm64 programs run here."""
    reason = missing()
    if reason:
        skip_unless_ci("arm64 test base", reason)


def _copy_blobs(src: Path, dest: Path) -> dict:
    """Copy ``src`` layout's blobs into ``dest``; returns its one manifest's descriptor."""
    for blob in (src / "blobs" / "sha256").iterdir():
        shutil.copyfile(blob, dest / "blobs" / "sha256" / blob.name)
    (desc,) = json.loads((src / "index.json").read_text())["manifests"]
    return {k: desc[k] for k in ("mediaType", "digest", "size")}


def make_index_layout(dest: Path, images: dict[str, Path]) -> Path:
    """An OCI layout (ref ``latest``) whose index holds each ``platform → one-image layout``."""
    (dest / "blobs" / "sha256").mkdir(parents=True)
    manifests = []
    for platform, layout in images.items():
        os_name, arch = platform.split("/")
        manifests.append({**_copy_blobs(layout, dest), "platform": {"os": os_name, "architecture": arch}})
    index = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests}).encode()
    digest = hashlib.sha256(index).hexdigest()
    (dest / "blobs" / "sha256" / digest).write_bytes(index)
    top = {"mediaType": INDEX, "digest": f"sha256:{digest}", "size": len(index),
           "annotations": {"org.opencontainers.image.ref.name": "latest"}}
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return dest


def push_index(layout: Path, ref: str) -> str:
    """Copy an index layout into the registry, every image of it (skopeo, an independent tool)."""
    subprocess.run(["skopeo", "copy", "--quiet", "--all", "--dest-tls-verify=false", f"oci:{layout}:latest",
                    f"docker://{ref}"], check=True, capture_output=True)
    return ref


@pytest.fixture(scope="session")
def arm64_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-layer OCI layout of arm64 busybox (config architecture arm64)."""
    require()
    return make_busybox_layout(tmp_path_factory.mktemp("busybox-arm64") / "layout", ARM64_BUSYBOX, "arm64")


@pytest.fixture(scope="session")
def multiarch_ref(registry: str, busybox_layout: Path, arm64_layout: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> str:
    """``REGISTRY/busybox-multi:latest``: an index of linux/amd64 and linux/arm64 busybox."""
    dest = tmp_path_factory.mktemp("busybox-multi") / "layout"
    make_index_layout(dest, {"linux/amd64": busybox_layout, "linux/arm64": arm64_layout})
    return push_index(dest, f"{registry}/busybox-multi:latest")


def multiplatform_dockerfile(base: str) -> str:
    """A stage on the build platform that every target platform copies from, and a RUN per target
    platform saying what it was told (TARGETARCH, TARGETPLATFORM) and what it runs on (``uname -m``)."""
    return f"""FROM --platform=$BUILDPLATFORM {base} AS tools
RUN echo tools-ran > /tools.txt && uname -m > /build-arch.txt
FROM {base}
ARG TARGETARCH
ARG TARGETPLATFORM
COPY --from=tools /tools.txt /build-arch.txt /
RUN echo "$TARGETARCH $TARGETPLATFORM $(uname -m)" > /arch.txt
"""
