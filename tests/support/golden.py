"""Golden files: compare a test's output with the expected file committed beside its case.

A missing expected file is a failure, never a silent write: otherwise deleting an expected file
would turn its test green.  Expected files are (re)written only when the one explicit variable
``IRCTL_REGEN_GOLDEN=1`` is set (see README.md, Quick start); review the diff by hand before
committing it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REGEN_VARIABLE = "IRCTL_REGEN_GOLDEN"


def regenerating() -> bool:
    """Read at call time, not import time, so a test can set the variable with monkeypatch."""
    return os.environ.get(REGEN_VARIABLE) == "1"


def check_golden(expected: Path, text: str) -> None:
    """Assert that `text` equals the content of `expected`; fail, naming the file, if it is missing."""
    if regenerating():
        expected.write_text(text)
    if not expected.is_file():
        test_file = os.environ.get("PYTEST_CURRENT_TEST", "").split("::")[0] or "<test file>"
        pytest.fail(f"{expected}: expected file missing; write it with {REGEN_VARIABLE}=1 python3 -m pytest "
                    f"{test_file}, then review it before committing", pytrace=False)
    assert text == expected.read_text()
