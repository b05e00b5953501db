"""The golden-file helper (`tests.support.golden`): a missing expected file fails, naming the file
and how to write it; only ``IRCTL_REGEN_GOLDEN=1`` writes expected files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.golden import REGEN_VARIABLE, check_golden

TESTS = Path(__file__).parent


def test_missing_expected_file_fails_naming_it_and_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(REGEN_VARIABLE, raising=False)
    expected = tmp_path / "case" / "expected.json"
    expected.parent.mkdir()
    with pytest.raises(pytest.fail.Exception) as info:
        check_golden(expected, "{}\n")
    assert str(expected) in str(info.value) and f"{REGEN_VARIABLE}=1" in str(info.value)
    assert not expected.exists()  # nothing was written


def test_different_output_fails(tmp_path, monkeypatch):
    monkeypatch.delenv(REGEN_VARIABLE, raising=False)
    expected = tmp_path / "expected.json"
    expected.write_text("old\n")
    with pytest.raises(AssertionError):
        check_golden(expected, "new\n")
    assert expected.read_text() == "old\n"
    check_golden(expected, "old\n")


@pytest.mark.parametrize("value", ["", "0", "yes"])
def test_only_the_value_1_regenerates(tmp_path, monkeypatch, value):
    monkeypatch.setenv(REGEN_VARIABLE, value)
    with pytest.raises(pytest.fail.Exception):
        check_golden(tmp_path / "expected.json", "x\n")


def test_regen_variable_writes_the_expected_file(tmp_path, monkeypatch):
    monkeypatch.setenv(REGEN_VARIABLE, "1")
    expected = tmp_path / "error.txt"
    expected.write_text("old\n")
    check_golden(expected, "new\n")
    assert expected.read_text() == "new\n"
    check_golden(tmp_path / "fresh.txt", "fresh\n")
    assert (tmp_path / "fresh.txt").read_text() == "fresh\n"


def test_the_variable_is_read_in_one_place():
    """No test file reads the variable itself (and so writes expected files its own way): the name
    appears as a string literal in the helper only (docstrings may mention it)."""
    literal = re.compile(rf"""["']{REGEN_VARIABLE}["']""")
    readers = sorted(str(p.relative_to(TESTS)) for p in TESTS.rglob("*.py") if literal.search(p.read_text("utf-8")))
    assert readers == ["support/golden.py"]
