"""``ExportMemo``: a destination counts as unchanged only while every file written is as we left it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from backend.export.reuse import SETTLE_NS, ExportMemo, replacing, what_digest


def test_remember_then_unchanged_until_touched(tmp_path: Path) -> None:
    memo, dest = ExportMemo(tmp_path / "store"), tmp_path / "out"
    with replacing(dest) as f:
        f.write(b"abc")
    what = what_digest("test", b"abc")
    memo.remember(dest, what, result="r")
    assert time.time_ns() >= os.lstat(dest).st_ctime_ns + SETTLE_NS  # a same-tick change cannot hide
    assert memo.unchanged(dest, what)["result"] == "r"
    assert memo.unchanged(dest, what_digest("test", b"abd")) is None  # something else wanted there
    os.chmod(dest, 0o600)  # metadata only: the ctime moves
    assert memo.unchanged(dest, what) is None


def test_a_record_naming_paths_outside_is_not_trusted(tmp_path: Path) -> None:
    memo, dest = ExportMemo(tmp_path / "store"), tmp_path / "d"
    dest.mkdir()
    (dest / "f").write_text("x")
    memo.remember(dest, "w", ["", "f"])
    assert memo.unchanged(dest, "w") is not None
    rec_path = next((tmp_path / "store" / "exports").iterdir())
    rec = json.loads(rec_path.read_text())
    st = os.lstat(tmp_path / "store")
    rec["files"].append(["../store", [st.st_dev, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns,
                                      st.st_ctime_ns]])
    rec_path.write_text(json.dumps(rec))
    assert memo.unchanged(dest, "w") is None
    rec_path.write_text("not json")
    assert memo.unchanged(dest, "w") is None


def test_replacing_leaves_nothing_when_the_writer_fails(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.write_bytes(b"old")
    try:
        with replacing(dest) as f:
            f.write(b"half")
            raise RuntimeError("disk full")
    except RuntimeError:
        pass
    assert dest.read_bytes() == b"old" and os.listdir(tmp_path) == ["out"]


def test_a_file_renamed_over_ours_is_not_recorded_as_ours(tmp_path: Path) -> None:
    """Two exports to one destination at once: the record must describe the file we wrote."""
    memo, dest = ExportMemo(tmp_path / "store"), tmp_path / "out"
    with replacing(dest) as f:
        f.write(b"ours")
        mine = os.fstat(f.fileno())
    with replacing(dest) as f:  # the other export's rename lands before we record
        f.write(b"theirs")
    memo.remember(dest, "ours", written={"": mine})
    assert memo.unchanged(dest, "ours") is None
