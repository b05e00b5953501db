"""The solver's end-to-end suite (tests/e2e) and the security suite (tests/security), run again as the
unprivileged user inside the user namespace (`-p tests.rootless.enter`): every case that passes as root
passes rootless.  A security test that cannot hold rootless skips with its reason (printed with -rs)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.rootless.conftest import UserCLI, rootless_skip_reason

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("suite", ["tests/e2e", "tests/security"])
def test_suite_passes_rootless(suite: str):
    reason = rootless_skip_reason()
    if reason:
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="irctl-rootless-suite.", dir="/tmp"))
    os.chmod(root, 0o755)
    try:
        cli = UserCLI(root, with_tests=True)
        workers = ["-n", "2"] if (os.cpu_count() or 1) > 1 else []
        res = cli.pytest("-q", "-rs", *workers, f"--basetemp={root / 'tmp'}", suite)
        tail = (res.stdout + res.stderr)[-4000:]
        assert res.returncode == 0, tail
        last = res.stdout.splitlines()[-1]
        assert " passed" in last, tail
        if suite == "tests/e2e":
            assert "skipped" not in last, tail
    finally:
        shutil.rmtree(root, ignore_errors=True)
