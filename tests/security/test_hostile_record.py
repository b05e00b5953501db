"""A build record (``--explain``) is read back from the cache store: a corrupt or hostile one, of this
target or of another, counts as absent or is skipped, and never ends a build in a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend.solve import buildrecord
from backend.solve.buildrecord import BuildRecord, target_name
from backend.solve.explain import explain, format_text


def _entry(desc: str) -> dict:
    return {"desc": desc, "group": "s", "kind": "exec", "status": "ran", "key": "k-" + desc, "body": "b" + desc,
            "detail": {"args": desc}, "extra": "", "inputs": [], "out": ["o-" + desc]}


def _saved(tmp_path: Path, name: str = "t") -> BuildRecord:
    rec = BuildRecord(target_name("build", tmp_path / "Dockerfile", name))
    rec.open(tmp_path)
    rec.steps["x"] = _entry("RUN x")
    rec.save()
    return rec


@pytest.mark.parametrize("when", [1e300, -1e300, "NaN", "Infinity"])
def test_a_record_time_out_of_range_is_not_a_traceback(tmp_path: Path, when) -> None:
    rec = _saved(tmp_path)
    data = json.loads(rec._path().read_text())
    data["time"] = when if not isinstance(when, str) else float(when.lower().replace("infinity", "inf"))
    rec._path().write_text(json.dumps(data))  # (json writes NaN and Infinity as such, and reads them)
    again = BuildRecord(rec.name)
    again.open(tmp_path)
    again.steps["x"] = _entry("RUN y")
    lines = format_text(again, explain(again))
    assert lines[0].startswith("why 1 step of ")


def test_a_deeply_nested_record_counts_as_absent(tmp_path: Path) -> None:
    rec = _saved(tmp_path)
    rec._path().write_text("[" * 200_000 + "]" * 200_000)
    again = BuildRecord(rec.name)
    again.open(tmp_path)
    assert again.previous is None


def test_a_deeply_nested_record_of_another_target_does_not_stop_the_collection(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(buildrecord, "MAX_RECORDS", 2)
    other = _saved(tmp_path, "other")
    other._path().write_text('{"steps": ' + "[" * 200_000 + "]" * 200_000 + "}")
    listings = tmp_path / "explain" / "listings"
    for n in range(4 * buildrecord.MAX_RECORDS + 300):  # enough listings to make it read every record
        (listings / f"{n:064x}").write_bytes(b"")
    _saved(tmp_path, "mine")  # saves, then forgets old records and listings: must not raise
