"""Golden files: compare a test's output with the expected file committed beside its case.

A missing expected file is a failure, never a silent write: otherwise deleting an expected file
would turn its test green.  Expected files are (re)written only when the one explicit variable
``IRCTL_REGEN_GOLDEN=1`` is set (see README.md, Quick start); review the diff by hand before
committing it.  Below, what the three frontends' golden tests share: the case folders, a case's
``request.json``, the projection compared with ``expected.json``, an error compared with
``error.txt``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from frontends import BuildRequest, Frontend, FrontendError
from ir import ops
from tests.support.projection import project
from tests.support.resolver import FakeResolver

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


# --------------------------------------------------------------------------- frontend case folders


def case_folders(folder: Path) -> list[Path]:
    """The case folders of a golden (or negative) folder, in name order."""
    return sorted(p for p in folder.iterdir() if p.is_dir())


def request_options(case: Path) -> dict:
    """The case's ``request.json`` (keyword arguments of its `BuildRequest`), or none."""
    path = case / "request.json"
    return json.loads(path.read_text()) if path.exists() else {}


def check_projection(document: ops.Document, expected: Path, **extra: object) -> None:
    """Compare the readable projection of `document` (plus `extra` keys) with `expected`."""
    got = {**project(document), **extra}
    check_golden(expected, json.dumps(got, indent=2, ensure_ascii=False) + "\n")


def check_refusal(frontend: Frontend, request: BuildRequest, expected: Path) -> None:
    """The frontend refuses `request`; the error's text is `expected`'s."""
    with pytest.raises(FrontendError) as info:
        frontend.compile(request, FakeResolver())
    check_golden(expected, str(info.value) + "\n")
