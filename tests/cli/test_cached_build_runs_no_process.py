"""A build its cache answers whole starts no process: finding and probing the OCI runtime (and a
step's network) waits for a step that runs, so a CI runner restoring everything from a cache spends
its cores on fetching and unpacking layers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.cli import irctl, write

pytestmark = pytest.mark.e2e


@pytest.mark.skipif(shutil.which("crun") is None, reason="the runtime probe is remembered only for crun")
def test_a_fully_cached_build_does_not_probe_the_runtime(tmp_path, busybox_ref, cache_env):
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\nRUN echo a > /a\n"})
    probe = Path(cache_env["IRCTL_CACHE_DIR"]) / "runtime.probe"
    first = irctl("build", ctx, env=cache_env)
    assert first.code == 0, first.stderr
    assert probe.exists()  # the step ran: the runtime was found and its probe remembered
    probe.unlink()
    # through the solver (an output forces it past the no-op fast path), every step a cache hit
    again = irctl("build", ctx, "--progress", "json", "--output", f"type=local,dest={tmp_path / 'out'}",
                  env=cache_env)
    assert again.code == 0, again.stderr
    assert [e for e in again.events() if e["kind"] == "started"] == []
    assert not probe.exists()
    edited = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\nRUN echo b > /b\n"})
    assert irctl("build", edited, env=cache_env).code == 0
    assert probe.exists()  # a step that runs still finds the runtime
