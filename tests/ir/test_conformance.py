"""Run every case of ``spec/conformance/`` against the table in its README."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ir import jsonform, validate
from ir.errors import IRError, ValidationErrors

ROOT = Path(__file__).resolve().parents[2] / "spec" / "conformance"
ROW = re.compile(r"^\| `([^`]+)` \| `?([^|`]*)`? \| (.*) \| (accepts|rejects) \|$")
TABLE = {m.group(1): (m.group(2).replace("\\|", "|") if m.group(2) != "-" else "", m.group(3).replace("\\|", "|"),
                      m.group(4))
         for m in map(ROW.match, (ROOT / "README.md").read_text(encoding="utf-8").splitlines()) if m}
MEANING = [m.group(1) for m in map(re.compile(r"^\| `([^`]+)` \| § [0-9.]+ \| ").match,
                                   (ROOT / "README.md").read_text(encoding="utf-8").splitlines()) if m]
VALID = sorted(p.stem for p in (ROOT / "valid").glob("*.json"))
INVALID = sorted(p.stem for p in (ROOT / "invalid").glob("*.json"))


def _no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate keys in {keys}"
    return dict(pairs)


def load(kind: str, name: str):
    return json.loads((ROOT / kind / f"{name}.json").read_text(encoding="utf-8"), object_pairs_hook=_no_duplicate_keys)


def first_error(value) -> IRError | None:
    try:
        validate.validate_document(jsonform.document_from_json(value))
    except ValidationErrors as e:
        return e.errors[0]
    except IRError as e:
        return e
    return None


def test_every_invalid_case_has_a_row_and_every_row_a_case() -> None:
    assert sorted(TABLE) == INVALID
    assert len(VALID) >= 5 and len(INVALID) >= 40


def test_every_answered_gap_has_a_valid_case() -> None:
    """The README's second table says what a reader does with a valid case; each row names one."""
    assert len(MEANING) >= 5 and set(MEANING) <= set(VALID)


@pytest.mark.parametrize("name", VALID)
def test_valid(name: str) -> None:
    value = load("valid", name)
    assert first_error(value) is None
    assert validate.schema_errors(value) == []


@pytest.mark.parametrize("name", INVALID)
def test_invalid(name: str) -> None:
    path, message, schema_verdict = TABLE[name]
    err = first_error(load("invalid", name))
    assert err is not None, f"{name} was accepted"
    assert (err.path, err.message) == (path, message)
    assert ("rejects" if validate.schema_errors(load("invalid", name)) else "accepts") == schema_verdict
