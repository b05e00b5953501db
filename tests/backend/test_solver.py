"""Solver units that need no container runtime: grants, validation, scheduling, keys, file/merge ops."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from backend.errors import GrantError, SolveError
from backend.events import Recorder
from backend.solve.scheduler import critical_path, run_dag
from backend.solve.locations import source_location
from backend.solve.solver import SolveOptions, solve
from ir import builder as b
from ir import ops
from ir.errors import IRError


def opts(tmp_path: Path, **kw) -> SolveOptions:
    return SolveOptions(cache_dir=tmp_path / "cache", **kw)


# ------------------------------------------------------------------------------------------- grants


def test_ungranted_local_context_is_refused_before_anything_runs(tmp_path: Path) -> None:
    s = b.scratch().copy(b.local("secrets-dir"), "id_rsa", "/id_rsa")
    doc = b.build_document({"default": s})
    with pytest.raises(GrantError, match=r"local directory 'secrets-dir'.*not granted.*--local secrets-dir=DIR"):
        solve(doc, ["default"], opts(tmp_path))
    assert not (tmp_path / "cache").exists()


def test_ungranted_oci_layout_and_insecure_are_refused(tmp_path: Path) -> None:
    doc = b.build_document({"default": b.oci_layout("base", ref="latest")})
    with pytest.raises(GrantError, match="--oci-layout base=PATH"):
        solve(doc, ["default"], opts(tmp_path))
    s = b.scratch().with_meta("RUN mount").run(["mount"], security="insecure")
    with pytest.raises(GrantError, match="RUN mount: .*security=insecure.*--allow security.insecure"):
        solve(b.build_document({"default": s}), ["default"], opts(tmp_path))


def test_invalid_graph_and_unknown_target(tmp_path: Path) -> None:
    doc = b.build_document({"default": b.scratch()})
    bad = ops.Document(version=1, ops=doc.ops, roots={"default": ops.Ref("sha256:" + "0" * 64)})
    with pytest.raises(IRError, match="not in the document"):
        solve(bad, ["default"], opts(tmp_path))
    with pytest.raises(SolveError, match="no target 'app'.*default"):
        solve(doc, ["app"], opts(tmp_path))


# ------------------------------------------------------------------------------------------- locations


def test_source_location_marks_the_op_lines() -> None:
    text = b"FROM busybox\nWORKDIR /app\nRUN make \\\n  all\nCMD x\n"
    s = b.scratch().with_meta("RUN make all", locations=[ops.Location(0, 3, end_line=4)]).run(["make"])
    doc = b.build_document({"default": s}, [ops.SourceFile("Dockerfile", "dockerfile", text)])
    loc = source_location(doc, doc.roots["default"].op)
    assert loc.splitlines() == [
        "Dockerfile:3-4", "-" * 20,
        "   1 |     FROM busybox", "   2 |     WORKDIR /app", "   3 | >>> RUN make \\", "   4 | >>>   all",
        "-" * 20]


# ------------------------------------------------------------------------------------------- scheduler


def test_scheduler_runs_independent_tasks_at_once_and_longest_path_first() -> None:
    deps = {"a": [], "b": ["a"], "c": ["b"], "x": [], "y": []}
    prio = critical_path(deps, lambda k: 1.0)
    assert prio["a"] == 3 and prio["x"] == 1
    spans: dict[str, tuple[float, float]] = {}
    order: list[str] = []

    def work(k: str) -> None:
        order.append(k)
        t = time.monotonic()
        time.sleep(0.2)
        spans[k] = (t, time.monotonic())

    run_dag(deps, work, priority=prio, cancel=threading.Event(), workers=1)
    assert order[0] == "a"
    spans.clear()
    run_dag(deps, work, priority=prio, cancel=threading.Event())
    assert max(spans[k][0] for k in "axy") < min(spans[k][1] for k in "axy")
    assert spans["b"][0] >= spans["a"][1] and spans["c"][0] >= spans["b"][1]


def test_scheduler_stops_on_the_first_error() -> None:
    deps = {"bad": [], "after": ["bad"], "slow": []}
    ran: list[str] = []
    cancel = threading.Event()

    def work(k: str) -> None:
        ran.append(k)
        if k == "bad":
            raise ValueError("bad failed")
        if k == "slow":
            cancel.wait(5)

    with pytest.raises(ValueError, match="bad failed"):
        run_dag(deps, work, priority={}, cancel=cancel)
    assert "after" not in ran and cancel.is_set()


# ------------------------------------------------------------------------------------------- file ops and keys


def test_copy_is_keyed_by_the_files_it_selects(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "app.py").write_text("print(1)\n")
    (ctx / "README").write_text("readme\n")
    s = b.scratch().copy(b.local("context"), "app.py", "/app/", meta=ops.OpMetadata("COPY app.py"),
                         create_dest_path=True)
    doc = b.build_document({"default": s})
    o = opts(tmp_path, local_dirs={"context": ctx})

    def run() -> tuple[list[str], object]:
        rec = Recorder()
        o.on_event = rec
        res = solve(doc, ["default"], o)["default"]
        return [e.description for e in rec.of("finished")], res

    ran, first = run()
    assert ran == ["COPY app.py"]
    (ctx / "README").write_text("edited\n")
    ran, second = run()
    assert ran == [] and second.identity == first.identity
    (ctx / "app.py").write_text("print(2)\n")
    ran, third = run()
    assert ran == ["COPY app.py"]
    assert (third.layers[-1] / "app" / "app.py").read_text() == "print(2)\n"


def test_merge_concatenates_layers_without_copying(tmp_path: Path) -> None:
    a = b.scratch().mkfile("/a", b"A")
    c = b.scratch().mkfile("/c", b"C")
    m = a.merge([c])
    res = solve(b.build_document({"default": m, "a": a}), ["default", "a"], opts(tmp_path))
    assert len(res["default"].layers) == 2
    assert res["default"].layers[0] == res["a"].layers[0]
    assert (res["default"].layers[1] / "c").read_bytes() == b"C"


def test_same_files_made_two_ways_have_the_same_identity(tmp_path: Path) -> None:
    one = b.scratch().mkfile("/f", b"same", timestamp=0)
    two = b.scratch().mkdir("/unused").rm("/unused").mkfile("/f", b"same", timestamp=5)
    res = solve(b.build_document({"one": one, "two": two}), ["one", "two"], opts(tmp_path))
    assert res["one"].layers[-1] == res["two"].layers[-1]


def test_diff_of_unrelated_snapshots_writes_whiteouts(tmp_path: Path) -> None:
    lower = b.scratch().mkfile("/keep", b"k").mkfile("/gone", b"g")
    upper = b.scratch().mkfile("/keep", b"k").mkfile("/new", b"n")
    res = solve(b.build_document({"default": lower.diff(upper)}), ["default"], opts(tmp_path))
    (layer,) = res["default"].layers
    import os
    import stat

    assert sorted(os.listdir(layer)) == ["gone", "new"]
    assert stat.S_ISCHR(os.lstat(layer / "gone").st_mode)


def test_read_selections_counts_an_input_whole_when_any_use_is_whole() -> None:
    from backend.ops.registry import handler_for

    def read_selections(op: ops.Op, index: int):
        return handler_for(op).reads(index)

    def exec_op(*mounts: ops.Mount) -> ops.Op:
        root = ops.Mount("/", input=0, output=0)
        return ops.Op(inputs=(ops.Ref("sha256:" + "a" * 64), ops.Ref("sha256:" + "b" * 64)),
                      exec=ops.ExecOp(args=("true",), mounts=(root, *mounts)))

    two = exec_op(ops.Mount("/r", input=1, selector="/req.txt", readonly=True),
                  ops.Mount("/s", input=1, selector="src"))  # a writable mount without output reads too
    reads = read_selections(two, 1)
    assert [(kind, a.src_path, a.follow_symlinks) for kind, a in reads] == [
        ("mount", "/req.txt", True), ("mount", "src", True)]
    assert read_selections(two, 0) is None  # the rootfs
    assert read_selections(exec_op(ops.Mount("/r", input=0, selector="/etc")), 0) is None  # also the rootfs
    assert read_selections(exec_op(ops.Mount("/r", input=1, selector="/a"), ops.Mount("/w", input=1)), 1) is None
    assert read_selections(exec_op(ops.Mount("/r", input=1, selector="/./")), 1) is None  # its root
    assert read_selections(exec_op(ops.Mount("/w", input=1, output=1)), 1) is None  # an output
    seed = exec_op(ops.Mount("/c", type="cache", input=1, selector="/cache", cache=ops.CacheOptions(id="c")))
    assert [a.src_path for _, a in read_selections(seed, 1)] == ["/cache"]  # a cache seeded from a sub-path


def test_key_body_leaves_out_cache_id_and_sharing_only() -> None:
    from backend.ops.registry import handler_for

    def key_body(op: ops.Op) -> ops.Op:
        return handler_for(op).key_body()

    def op(**cache) -> ops.Op:
        return ops.Op(exec=ops.ExecOp(args=("true",), mounts=(
            ops.Mount("/", input=-1, output=0),
            ops.Mount("/c", type="cache", cache=ops.CacheOptions(**{"id": "/c", **cache})))))

    default = key_body(op())
    assert default == op()  # a default cache mount keeps its key
    assert key_body(op(sharing="locked")) == key_body(op(id="x", sharing="private")) == default
    assert key_body(op(uid=1000)) != default and key_body(op(mode=0o700)) != default
