"""Build records and the pairing/wording of ``--explain`` (``backend.solve.buildrecord``, ``backend.solve.explain``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from backend.solve import buildrecord
from backend.solve.buildrecord import BuildRecord, target_name
from backend.solve.explain import explain, match_steps
from ir import ops
from ir.codec import op_digest


def step(desc: str, group: str = "s", inputs=(), kind: str = "exec", body: str = "b", key: str = "") -> dict:
    return {"desc": desc, "group": group, "kind": kind, "status": "ran", "key": key or f"k-{desc}-{inputs}",
            "body": body + desc, "detail": {"args": desc}, "extra": "", "inputs": [list(i) for i in inputs],
            "out": ["o-" + desc]}


def test_pairing_survives_an_inserted_step_and_finds_an_edited_one_along_the_graph() -> None:
    prev = {"base": step("FROM x", kind="base"),
            "p1": step("[s 2/3] RUN a", inputs=[("base", 0, "i")]),
            "p2": step("[s 3/3] RUN make", inputs=[("p1", 0, "i")])}
    cur = {"base": step("FROM x", kind="base"),
           "c0": step("[s 2/4] RUN new", inputs=[("base", 0, "i")]),
           "c1": step("[s 3/4] RUN a", inputs=[("c0", 0, "j")]),
           "c2": step("[s 4/4] RUN make -j4", inputs=[("c1", 0, "j")])}
    # the counters moved and c2's text changed; c0 stands where nothing stood
    assert match_steps(cur, prev) == {"base": "base", "c1": "p1", "c2": "p2"}


def test_reasons_for_an_edited_command_an_env_change_and_a_new_step(tmp_path: Path) -> None:
    rec = BuildRecord(target_name("build", tmp_path / "Dockerfile", ""))
    rec.open(tmp_path)
    base = ops.Op(source=ops.SourceOp(image=ops.ImageSource(ref="busybox:1", digest="sha256:" + "1" * 64)))
    run = ops.Op(inputs=(ops.Ref(op_digest(base)),), exec=ops.ExecOp(args=("sh", "-c", "make"), env=("V=1",),
                                                                  mounts=(ops.Mount("/", input=0, output=0),)))
    rec.note(op_digest(base), base, base, "[build 1/2] FROM busybox:1", "build", "resolved", identities=["sha256:" + "a" * 64])
    rec.note(op_digest(run), run, run, "[build 2/2] RUN make", "build", "ran", "key1", [(op_digest(base), 0, "sha256:" + "a" * 64)])
    assert [x.reasons for x in explain(rec)] == [("first build of this target: no earlier successful build to compare with",)]
    rec.save()

    again = BuildRecord(rec.name)
    again.open(tmp_path)
    assert again.previous is not None and again.previous["steps"] == rec.steps
    base2 = ops.Op(source=ops.SourceOp(image=ops.ImageSource(ref="busybox:1", digest="sha256:" + "2" * 64)))
    run2 = ops.Op(inputs=(ops.Ref(op_digest(base2)),), exec=ops.ExecOp(args=("sh", "-c", "make -j4"), env=("V=2", "W=1"),
                                                                    mounts=(ops.Mount("/", input=0, output=0),)))
    again.note(op_digest(base2), base2, base2, "[build 1/2] FROM busybox:1", "build", "resolved", identities=["sha256:" + "b" * 64])
    again.note(op_digest(run2), run2, run2, "[build 2/2] RUN make -j4", "build", "ran", "key2",
               [(op_digest(base2), 0, "sha256:" + "b" * 64)])
    (x,) = explain(again)
    assert x.reasons == ("the command changed (was: [build 2/2] RUN make)",
                         "the value of V changed (ENV or build arg)", "W is now set (ENV or build arg)",
                         "the base image busybox:1 changed: digest aaaaaaaaaaaa -> bbbbbbbbbbbb")


def test_a_torn_or_foreign_record_counts_as_absent_and_writes_are_atomic(tmp_path: Path, monkeypatch) -> None:
    rec = BuildRecord(target_name("build", tmp_path / "Dockerfile", "t"))
    rec.open(tmp_path)
    rec.steps["x"] = step("RUN x")
    rec.save()
    path = rec._path()
    good = path.read_bytes()
    shapes = [json.loads(good) for _ in range(3)]
    shapes[0]["steps"]["x"]["inputs"] = [[1, 2]]
    shapes[1]["steps"]["x"] = "step"
    shapes[2]["name"] = "other"
    for bad in (good[: len(good) // 2], b"[]", *(json.dumps(x).encode() for x in shapes)):
        path.write_bytes(bad)
        fresh = BuildRecord(rec.name)
        fresh.open(tmp_path)
        assert fresh.previous is None
    path.write_bytes(good)

    def crash(*a):  # killed between writing the new record and renaming it into place
        raise KeyboardInterrupt

    monkeypatch.setattr(buildrecord.os, "replace", crash)
    rec.steps["y"] = step("RUN y")
    try:
        rec.save()
    except KeyboardInterrupt:
        pass
    assert path.read_bytes() == good
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_records_and_listings_are_bounded(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(buildrecord, "MAX_RECORDS", 3)
    monkeypatch.setattr(buildrecord, "MAX_LISTING", 2)
    for n in range(5):
        rec = BuildRecord(target_name("build", tmp_path / f"Dockerfile.{n}", ""))
        rec.open(tmp_path)
        rec.steps["x"] = step("RUN x")
        rec.save()
        os.utime(rec._path(), (n, n))
    assert len(list((tmp_path / "explain" / "records").glob("*.json"))) == 3
    rec.save_listing("sha256:" + "c" * 64, [("a", "1"), ("b", "2"), ("c", "3")])  # too long: not kept
    assert rec.listing("sha256:" + "c" * 64) is None
    walked = rec.new_listing()
    for n in range(1000):  # what a selection walk appends: kept only up to the bound
        walked.append((str(n), "h"))
    assert len(walked) == 2 and walked.overflow
    rec.save_listing("sha256:" + "e" * 64, walked)
    assert rec.listing("sha256:" + "e" * 64) is None
    rec.save_listing("sha256:" + "d" * 64, [("a", "1"), ("b b", "2")])
    assert rec.listing("sha256:" + "d" * 64) == {"a": "1", "b b": "2"}


def test_a_listing_keeps_names_with_unicode_line_separators(tmp_path: Path) -> None:
    # str.splitlines() also splits at \x1c-\x1e, \x85, \u2028, \u2029: a file so named must stay one entry
    rec = BuildRecord(target_name("build", tmp_path / "Dockerfile", ""))
    rec.open(tmp_path)
    names = ["a\u2028b", "c\x1cd", "e\x85f", "g\rh", "plain"]
    rec.save_listing("sha256:" + "1" * 64, [(n, f"{i:016x}") for i, n in enumerate(names)])
    assert rec.listing("sha256:" + "1" * 64) == {n: f"{i:016x}" for i, n in enumerate(names)}
