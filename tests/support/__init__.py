"""Shared test helpers. Fixtures live in modules here and are pulled into tests/conftest.py.

`e2e_skip_reason()` says why real-runtime tests cannot run on this machine (None when they can);
`pids_with(marker)` finds the processes (a container's, say) whose command line holds `marker`.
`skip_unless_ci(what, reason)` skips a test whose set-up is missing here — or fails it in CI (`CI=true`),
where setup.sh must have installed everything, so a broken runner cannot pass by skipping.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path


@functools.cache
def e2e_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return ("e2e: needs root (real runc and overlay mounts); as a user with subordinate ids, "
                "run pytest -p tests.rootless.enter")
    if not (os.environ.get("IRCTL_RUNTIME") or shutil.which("runc") or shutil.which("crun")):
        return "e2e: no OCI runtime (apt-get install runc)"
    if not os.path.exists("/bin/busybox"):
        return "e2e: /bin/busybox missing (apt-get install busybox-static)"
    return None


def pids_with(marker: str) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if marker.encode() in (p / "cmdline").read_bytes():
                    pids.append(int(p.name))
            except OSError:
                pass
    return pids


def skip_unless_ci(what: str, reason: str) -> None:
    import pytest  # lazy: examples run `python3 -m tests.support.baseimage` where pytest need not be installed

    if os.environ.get("CI") == "true":
        pytest.fail(f"{what}: {reason}", pytrace=False)
    pytest.skip(f"{what}: {reason}")
