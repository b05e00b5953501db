"""The README's main job: each example builds on a locally made base image and its CMD runs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
TOP = Path(__file__).resolve().parents[2]
EXPECTED = "Hello from an image built by irctl on Linux.\nbuilt by irctl, with a secret it never stored\n"


@pytest.mark.parametrize("example", ["hello", "recipe", "pydsl"])
def test_example_builds_and_runs(example, tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "IRCTL_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([str(TOP / "examples" / example / "run.sh")], capture_output=True, text=True, env=env,
                          timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == EXPECTED
