"""The solver's end-to-end suite (tests/e2e), run again as the unprivileged user inside the user namespace
(`-p tests.rootless.enter`): every case that passes as root passes rootless."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.rootless.conftest import UserCLI, rootless_skip_reason

pytestmark = pytest.mark.e2e


def test_e2e_suite_passes_rootless():
    reason = rootless_skip_reason()
    if reason:
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="irctl-rootless-e2e.", dir="/tmp"))
    os.chmod(root, 0o755)
    try:
        cli = UserCLI(root, with_tests=True)
        workers = ["-n", "2"] if (os.cpu_count() or 1) > 1 else []
        res = cli.pytest("-q", *workers, f"--basetemp={root / 'tmp'}", "tests/e2e")
        tail = (res.stdout + res.stderr)[-4000:]
        assert res.returncode == 0, tail
        assert " passed" in res.stdout and "skipped" not in res.stdout.splitlines()[-1], tail
    finally:
        shutil.rmtree(root, ignore_errors=True)
