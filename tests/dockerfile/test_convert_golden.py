"""Golden IR tests: every folder of ``golden_ir/`` holds a ``Dockerfile``, an optional
``request.json`` (``target``, ``build_args``, ``contexts`` as ``{name: [kind, value]}``,
``platform``, ``ignore_patterns``) and ``expected.json``, the readable projection of the compiled
document (``tests.support.projection``).  Every folder of ``negative_ir/`` holds a Dockerfile and
``error.txt``, the exact text of the error.  A missing expected file fails; ``IRCTL_REGEN_GOLDEN=1``
rewrites them (``tests.support.golden``; review the diff by hand before committing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from frontends import BuildRequest, NamedContext
from frontends.dockerfile import FRONTEND
from ir import ops
from ir.validate import validate_document
from tests.support.golden import case_folders, check_projection, check_refusal, request_options
from tests.support.resolver import FakeResolver

HERE = Path(__file__).parent
GOLDEN = case_folders(HERE / "golden_ir")
NEGATIVE = case_folders(HERE / "negative_ir")


def request_for(case: Path) -> BuildRequest:
    opts = request_options(case)
    kw = {}
    if "target" in opts:
        kw["target"] = opts["target"]
    if "build_args" in opts:
        kw["build_args"] = opts["build_args"]
    if "contexts" in opts:
        kw["contexts"] = {k: NamedContext(*v) for k, v in opts["contexts"].items()}
    if "platform" in opts:
        kw["platform"] = ops.Platform(*opts["platform"].split("/"))
    if "ignore_patterns" in opts:
        kw["ignore_patterns"] = tuple(opts["ignore_patterns"])
    return BuildRequest((case / "Dockerfile").read_bytes(), **kw)


@pytest.mark.parametrize("case", GOLDEN, ids=[p.name for p in GOLDEN])
def test_golden_ir(case: Path):
    compiled = FRONTEND.compile(request_for(case), FakeResolver())
    validate_document(compiled.document)
    assert set(compiled.document.metadata) == set(compiled.document.ops)  # every op has a source-map entry
    check_projection(compiled.document, case / "expected.json", warnings=list(compiled.warnings))


@pytest.mark.parametrize("case", NEGATIVE, ids=[p.name for p in NEGATIVE])
def test_negative_ir(case: Path):
    check_refusal(FRONTEND, request_for(case), case / "error.txt")
