"""A pytest plugin that runs the whole test session rootless: `python -m pytest -p tests.rootless.enter ...`
as an ordinary user enters the user namespace first (as `irctl build` does), so the e2e suites run with
uid 0 of the namespace, kernel overlayfs with `userxattr` and runc `--rootless`. As root it does nothing."""

from __future__ import annotations

import os


def pytest_configure(config) -> None:
    if os.geteuid() == 0:
        return
    import resource

    from backend import userns

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # as much as root gets (xdist workers inherit it)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    userns.enter()  # xdist workers are children of this process: they inherit the namespace
