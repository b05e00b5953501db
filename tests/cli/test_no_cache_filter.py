"""``irctl build --no-cache-filter STAGE`` (buildx's flag): the steps of the named stages run again,
the others come from the cache, and a step after a re-run stage still hits when what it reads did not
change (irctl's keys are by content: BuildKit would run it again too)."""

from __future__ import annotations

import re

import pytest

from tests.support.cli import irctl, write

pytestmark = pytest.mark.e2e


def statuses(r) -> dict[str, str]:
    """Step text (without the ``[stage n/m]`` counter) -> DONE or CACHED, from ``--progress plain``."""
    names: dict[str, str] = {}
    out: dict[str, str] = {}
    for line in r.stderr.splitlines():
        m = re.match(r"#(\d+) \[[^\]]*\] (.*)$", line)
        if m:
            names[m.group(1)] = m.group(2)
        m = re.match(r"#(\d+) (DONE|CACHED)", line)
        if m and m.group(1) in names:
            out[names[m.group(1)]] = m.group(2)
    return out


def test_the_filtered_stage_runs_again_and_the_rest_is_cached(tmp_path, busybox_ref, cache_env):
    ctx = write(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {busybox_ref} AS deps\nRUN echo deps > /deps\n"
        f"FROM {busybox_ref} AS app\nCOPY --from=deps /deps /deps\nRUN echo app > /app\n")})
    out = ["--progress", "plain", "--output", f"type=local,dest={tmp_path / 'out'}"]
    first = irctl("build", ctx, *out, env=cache_env)
    assert first.code == 0, first.stderr
    r = irctl("build", ctx, *out, "--no-cache-filter", "deps", env=cache_env)
    assert r.code == 0, r.stderr
    steps = statuses(r)
    assert steps["RUN echo deps > /deps"] == "DONE"
    assert steps["RUN echo app > /app"] == "CACHED"  # /deps came out the same: early cutoff
    assert (tmp_path / "out" / "app").read_text() == "app\n"
    r = irctl("build", ctx, *out, "--no-cache-filter", "deps,app", env=cache_env)
    assert statuses(r)["RUN echo app > /app"] == "DONE"


def test_a_stage_name_the_build_does_not_have_is_a_one_line_error(tmp_path, busybox_ref, cache_env):
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref} AS deps\nRUN true\n"})
    r = irctl("build", ctx, "--no-cache-filter", "dpes", "--output", f"type=local,dest={tmp_path / 'o'}",
              env=cache_env)
    assert r.code == 1
    assert r.stderr.strip().splitlines()[-1] == "error: --no-cache-filter: no stage named 'dpes' (stages: deps)"
