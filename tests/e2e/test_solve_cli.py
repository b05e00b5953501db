"""``irctl solve`` and ``irctl cache du|prune`` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ir import builder as b
from ir import ops
from ir.codec import dump_document
from tests.e2e.conftest import PATH
from tests.support.cli import Result
from tests.support.cli import irctl as run_irctl

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def irctl(*args, check: bool = True) -> Result:
    r = run_irctl(*args, cwd=ROOT, timeout=120)
    if check:
        assert r.code == 0, r.stderr
    return r


def test_solve_then_du_then_prune(tmp_path: Path, busybox_layout: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "msg").write_text("hi\n")
    base = b.oci_layout("busybox", ref="latest").with_env("PATH", PATH)
    s = base.copy(b.local("context"), "msg", "/msg").with_meta("RUN cat").run(["sh", "-c", "cat /msg > /out"])
    graph = tmp_path / "g.ir"
    graph.write_bytes(dump_document(b.build_document({"default": s})))
    cache = tmp_path / "cache"
    grants = ["--cache-dir", cache, "--local", f"context={ctx}", "--oci-layout", f"busybox={busybox_layout}"]

    first = irctl("solve", graph, *grants, "--progress", "plain")
    result = json.loads(first.stdout)
    assert result["target"] == "default" and result["identity"].startswith("sha256:")
    assert Path(result["layers"][-1], "out").read_text() == "hi\n"
    assert "DONE" in first.stderr
    again = irctl("solve", graph, *grants, "--progress", "json")
    kinds = {json.loads(line)["kind"] for line in again.stderr.splitlines()}
    assert "started" not in kinds and "cached" in kinds
    assert json.loads(again.stdout)["identity"] == result["identity"]

    refused = irctl("solve", graph, "--cache-dir", cache, check=False)
    assert refused.code != 0 and "Traceback" not in refused.stderr
    assert "--local context=DIR" in refused.stderr and "--oci-layout busybox=PATH" in refused.stderr

    du = irctl("cache", "du", "--cache-dir", cache).stdout
    assert "results: 2" in du and "layers:  3" in du
    irctl("cache", "prune", "--cache-dir", cache, "--keep-storage", "1GB")
    assert "results: 2" in irctl("cache", "du", "--cache-dir", cache).stdout
    irctl("cache", "prune", "--cache-dir", cache, "--all")
    assert "total:   0B" in irctl("cache", "du", "--cache-dir", cache).stdout


def test_failing_solve_prints_location_without_traceback(tmp_path: Path, busybox_layout: Path) -> None:
    src = b"FROM busybox\nRUN echo about to fail; false\n"
    s = b.oci_layout("busybox", ref="latest").with_env("PATH", PATH).with_meta(
        "[1/1] RUN echo about to fail; false", locations=[ops.Location(0, 2)]).run(
        ["sh", "-c", "echo about to fail; false"])
    graph = tmp_path / "g.ir"
    graph.write_bytes(dump_document(b.build_document({"default": s}, [ops.SourceFile("Dockerfile", "dockerfile", src)])))
    p = irctl("solve", graph, "--cache-dir", tmp_path / "cache", "--oci-layout", f"busybox={busybox_layout}",
              "--progress", "quiet", check=False)
    assert p.code == 1
    assert "Dockerfile:2" in p.stderr and ">>> RUN echo about to fail; false" in p.stderr
    assert "about to fail" in p.stderr and "exit code 1" in p.stderr and "Traceback" not in p.stderr


def test_solve_explain_names_the_changed_context_file(tmp_path: Path, busybox_layout: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "msg").write_text("hi\n")
    base = b.oci_layout("busybox", ref="latest").with_env("PATH", PATH)
    s = base.copy(b.local("context"), "msg", "/msg", meta=ops.OpMetadata("COPY msg /msg")).run(["sh", "-c", "cat /msg"])
    graph = tmp_path / "g.ir"
    graph.write_bytes(dump_document(b.build_document({"default": s})))
    grants = ["--cache-dir", tmp_path / "cache", "--local", f"context={ctx}", "--oci-layout", f"busybox={busybox_layout}"]
    first = irctl("solve", graph, *grants, "--progress", "plain", "--explain")
    assert "\n => COPY msg /msg\n      first build of this target" in first.stderr
    (ctx / "msg").write_text("hello\n")
    again = irctl("solve", graph, *grants, "--progress", "plain", "--explain")
    assert f"why 2 steps of {graph} (targets default) ran, compared with" in again.stderr
    assert "\n => COPY msg /msg\n      build context files it reads changed: msg (changed)\n" in again.stderr
    assert "\n => RUN sh -c cat /msg\n      COPY msg /msg re-ran and produced different files\n" in again.stderr
