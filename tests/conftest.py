"""Shared fixtures. Keep this small: fixtures live in tests/support/ modules and are imported here."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import e2e_skip_reason
from tests.support.baseimage import make_busybox_layout, make_busybox_rootfs
from tests.support.arm64 import arm64_layout, multiarch_ref  # noqa: F401  (session fixtures: arm64 busybox)
from tests.support.registry import registry  # noqa: F401  (session fixture: "127.0.0.1:PORT")
from tests.support.buildgrid import (  # noqa: F401  (BuildGrid on loopback: session, per test; irctl workers)
    buildgrid, buildgrid_cluster, fresh_buildgrid, workers)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `@pytest.mark.e2e` tests, with the reason, where root or the OCI runtime is missing."""
    reason = e2e_skip_reason()
    if reason:
        for item in items:
            if "e2e" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox root filesystem directory (also usable as a single lower layer). Do not modify it."""
    _skip_without_busybox()
    return make_busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


@pytest.fixture(scope="session")
def busybox_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A single-layer OCI image layout of busybox (ref `latest`). Do not modify it."""
    _skip_without_busybox()
    return make_busybox_layout(tmp_path_factory.mktemp("busybox-oci") / "layout")


def _skip_without_busybox() -> None:
    """The busybox fixtures need /bin/busybox only (not root or a runtime): skip for that alone."""
    reason = e2e_skip_reason()
    if reason and "busybox" in reason:
        pytest.skip(reason)
