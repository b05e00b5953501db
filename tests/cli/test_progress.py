"""What ``irctl build`` shows while it works, through the real CLI: pulls layer by layer, plain
lines with BuildKit's elapsed times, one located error, no noise; and a mistyped stage name that
fails at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import irctl

pytestmark = pytest.mark.e2e


def write(ctx: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        p = ctx / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return ctx


def test_mistyped_stage_name_fails_without_retrying_the_registry(tmp_path, busybox_ref, cache_env):
    """``--from=biuld`` is an image name on docker.io (legal, as in BuildKit); its lookup fails on a
    name that does not resolve (or a 404 where there is network), which is not retried."""
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref} AS build\nRUN echo hi > /x\n"
                                                 f"FROM {busybox_ref}\nCOPY --from=biuld /x /x\n"})
    r = irctl("build", ctx, "--progress", "plain", env=cache_env)
    assert r.code != 0
    assert "Dockerfile:4:6: \"biuld\" is neither a stage of this Dockerfile nor an image" in r.stderr
    assert "(did you mean build?)" in r.stderr
    assert "attempts" not in r.stderr, r.stderr  # one attempt, not five
