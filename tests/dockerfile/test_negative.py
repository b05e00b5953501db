"""Negative golden folders: ``negative/<case>/Dockerfile`` must fail with exactly
``negative/<case>/expected`` (location, message, source line, caret)."""

from __future__ import annotations

from pathlib import Path

import pytest

from frontends.dockerfile.parse import parse_dockerfile
from frontends.errors import SourceError

NEGATIVE = Path(__file__).parent / "negative"
CASES = sorted(p.name for p in NEGATIVE.iterdir() if (p / "Dockerfile").is_file())


@pytest.mark.parametrize("case", CASES)
def test_negative(case):
    d = NEGATIVE / case
    with pytest.raises(SourceError) as info:
        parse_dockerfile((d / "Dockerfile").read_text("utf-8"), "Dockerfile")
    assert info.value.format() + "\n" == (d / "expected").read_text("utf-8")


def test_every_case_has_an_expectation():
    assert CASES and all((NEGATIVE / c / "expected").is_file() for c in CASES)
