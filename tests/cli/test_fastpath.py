"""The no-op fast path answers only when nothing that can change the result has changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import FAST, build_ok, irctl

pytestmark = pytest.mark.e2e


@pytest.fixture
def ctx(tmp_path, busybox_ref) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {busybox_ref}\nARG V=1\nCOPY a.txt /a.txt\nRUN echo $V > /v\n")
    (ctx / "a.txt").write_text("one\n")
    (ctx / ".dockerignore").write_text("ignored.txt\n")
    return ctx


def test_unchanged_inputs_take_the_fast_path(ctx, cache_env):
    assert FAST not in build_ok(ctx, cache_env)
    assert FAST in build_ok(ctx, cache_env)


def test_every_input_invalidates_it(ctx, cache_env, tmp_path):
    build_ok(ctx, cache_env)
    (ctx / "a.txt").write_text("two\n")
    assert FAST not in build_ok(ctx, cache_env)
    assert FAST in build_ok(ctx, cache_env)
    assert FAST not in build_ok(ctx, cache_env, "--build-arg", "V=2")
    assert FAST in build_ok(ctx, cache_env, "--build-arg", "V=2")
    (ctx / "Dockerfile").write_text((ctx / "Dockerfile").read_text() + "ENV X=1\n")
    assert FAST not in build_ok(ctx, cache_env, "--build-arg", "V=2")
    (ctx / ".dockerignore").write_text("ignored.txt\nother\n")
    assert FAST not in build_ok(ctx, cache_env, "--build-arg", "V=2")


def test_the_network_mode_is_an_input(ctx, cache_env):
    """``--network none`` changes what a RUN without its own ``--network=`` sees: its memo answers
    only the same mode, and typing ``--network default`` is the same build as typing nothing."""
    build_ok(ctx, cache_env)
    assert FAST in build_ok(ctx, cache_env, "--network", "default")
    assert FAST not in build_ok(ctx, cache_env, "--network", "none")
    assert FAST in build_ok(ctx, cache_env, "--network=none")
    assert FAST in build_ok(ctx, cache_env)


def test_outputs_and_cache_options_never_take_it(ctx, cache_env, tmp_path):
    build_ok(ctx, cache_env)
    assert FAST not in build_ok(ctx, cache_env, "--output", f"type=local,dest={tmp_path / 'out'}")
    assert (tmp_path / "out" / "v").read_text() == "1\n"
    assert FAST not in build_ok(ctx, cache_env, "--no-cache")
    assert FAST not in build_ok(ctx, cache_env, "--pull")


def test_a_pruned_cache_is_not_trusted(ctx, cache_env):
    build_ok(ctx, cache_env)
    assert irctl("cache", "prune", "--all", env=cache_env).code == 0
    assert FAST not in build_ok(ctx, cache_env)


def test_cache_root_matches_the_backend(monkeypatch, tmp_path):
    from backend.store.cache import default_root
    from irctl.fastpath import cache_root

    for env in ({}, {"XDG_CACHE_HOME": str(tmp_path / "x")}, {"IRCTL_CACHE_DIR": str(tmp_path / "i")}):
        monkeypatch.delenv("IRCTL_CACHE_DIR", raising=False)
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        assert cache_root(None) == default_root(None)
        assert cache_root(str(tmp_path / "c")) == default_root(str(tmp_path / "c"))


def test_the_compiled_graph_is_reused_only_for_the_same_build_file(ctx, cache_env, tmp_path):
    """A source edit recompiles nothing (``fastpath.compile_key`` leaves the context's files out), yet
    the build file's warnings are printed every time and an edited build file is compiled anew."""
    out = ["--output", f"type=local,dest={tmp_path / 'out'}"]  # past the no-op fast path
    (ctx / "Dockerfile").write_text((ctx / "Dockerfile").read_text() + "FROM scratch AS Final\n"
                                    "COPY --from=0 /v /a.txt /\n")
    assert "StageNameCasing" in build_ok(ctx, cache_env, *out)
    graphs = list((Path(cache_env["IRCTL_CACHE_DIR"]) / "builds").glob("*.ir"))
    assert len(graphs) == 1
    (ctx / "a.txt").write_text("two\n")
    assert "StageNameCasing" in build_ok(ctx, cache_env, *out)  # replayed from the memo
    assert (tmp_path / "out" / "a.txt").read_text() == "two\n"
    assert list((Path(cache_env["IRCTL_CACHE_DIR"]) / "builds").glob("*.ir")) == graphs
    (ctx / "Dockerfile").write_text((ctx / "Dockerfile").read_text().replace("AS Final", "AS final"))
    assert "StageNameCasing" not in build_ok(ctx, cache_env, *out)
    assert (tmp_path / "out" / "v").read_text() == "1\n"


def test_a_corrupt_compiled_graph_is_compiled_again(ctx, cache_env, tmp_path):
    out = ["--output", f"type=local,dest={tmp_path / 'out'}"]
    build_ok(ctx, cache_env, *out)
    builds = Path(cache_env["IRCTL_CACHE_DIR"]) / "builds"
    for junk, graph in zip((b"", b"\x00" * 64, b"IRCTL"), sorted(builds.glob("*.ir")) * 3):
        graph.write_bytes(junk)
        (ctx / "a.txt").write_text(f"{junk!r}\n")
        assert "Traceback" not in build_ok(ctx, cache_env, *out)
        assert (tmp_path / "out" / "a.txt").read_text() == f"{junk!r}\n"
    warnings = next(builds.glob("*.warnings"))
    warnings.write_text('{"not": "a list"}')
    build_ok(ctx, cache_env, *out)
