"""The CLI tests' fixtures: a loopback registry holding busybox and a private cache.  The CLI
runner itself lives in ``tests.support.cli``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def busybox_ref(registry: str, busybox_layout: Path) -> str:
    """busybox pushed to the loopback registry by skopeo (an independent tool)."""
    ref = f"{registry}/busybox:latest"
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{busybox_layout}:latest",
                    f"docker://{ref}"], check=True, capture_output=True)
    return ref


@pytest.fixture
def cache_env(tmp_path: Path) -> dict:
    return {"IRCTL_CACHE_DIR": str(tmp_path / "cache")}
