"""The no-op fast path answers only when nothing that can change the result has changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import irctl

pytestmark = pytest.mark.e2e
FAST = "build inputs unchanged"


@pytest.fixture
def ctx(tmp_path, busybox_ref) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {busybox_ref}\nARG V=1\nCOPY a.txt /a.txt\nRUN echo $V > /v\n")
    (ctx / "a.txt").write_text("one\n")
    (ctx / ".dockerignore").write_text("ignored.txt\n")
    return ctx


def build(ctx: Path, env: dict, *extra: str):
    r = irctl("build", "--progress", "plain", *extra, ctx, env=env)
    assert r.code == 0, r.stderr
    return r.stderr


def test_unchanged_inputs_take_the_fast_path(ctx, cache_env):
    assert FAST not in build(ctx, cache_env)
    assert FAST in build(ctx, cache_env)


def test_every_input_invalidates_it(ctx, cache_env, tmp_path):
    build(ctx, cache_env)
    (ctx / "a.txt").write_text("two\n")
    assert FAST not in build(ctx, cache_env)
    assert FAST in build(ctx, cache_env)
    assert FAST not in build(ctx, cache_env, "--build-arg", "V=2")
    assert FAST in build(ctx, cache_env, "--build-arg", "V=2")
    (ctx / "Dockerfile").write_text((ctx / "Dockerfile").read_text() + "ENV X=1\n")
    assert FAST not in build(ctx, cache_env, "--build-arg", "V=2")
    (ctx / ".dockerignore").write_text("ignored.txt\nother\n")
    assert FAST not in build(ctx, cache_env, "--build-arg", "V=2")


def test_outputs_and_cache_options_never_take_it(ctx, cache_env, tmp_path):
    build(ctx, cache_env)
    assert FAST not in build(ctx, cache_env, "--output", f"type=local,dest={tmp_path / 'out'}")
    assert (tmp_path / "out" / "v").read_text() == "1\n"
    assert FAST not in build(ctx, cache_env, "--no-cache")
    assert FAST not in build(ctx, cache_env, "--pull")


def test_a_pruned_cache_is_not_trusted(ctx, cache_env):
    build(ctx, cache_env)
    assert irctl("cache", "prune", "--all", env=cache_env).code == 0
    assert FAST not in build(ctx, cache_env)


def test_cache_root_matches_the_backend(monkeypatch, tmp_path):
    from backend.cache import default_root
    from irctl.fastpath import cache_root

    for env in ({}, {"XDG_CACHE_HOME": str(tmp_path / "x")}, {"IRCTL_CACHE_DIR": str(tmp_path / "i")}):
        monkeypatch.delenv("IRCTL_CACHE_DIR", raising=False)
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        assert cache_root(None) == default_root(None)
        assert cache_root(str(tmp_path / "c")) == default_root(str(tmp_path / "c"))
