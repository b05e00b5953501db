"""The Python DSL frontend: golden IR folders, negative folders with the exact error text, the
source map (each op points at the Python line that made it), immutability and the load rules.

``golden/<case>/build.py`` (+ optional ``request.json``) → ``expected.json``;
``negative/<case>/build.py`` → ``error.txt``.  A missing expected file fails;
``IRCTL_REGEN_GOLDEN=1`` rewrites them (``tests.support.golden``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from frontends import BuildRequest
from frontends.pydsl import FRONTEND, cache, image, secret
from frontends.pydsl.load import execute
from ir.validate import validate_document
from tests.support.golden import case_folders, check_projection, check_refusal, request_options
from tests.support.resolver import FakeResolver

HERE = Path(__file__).parent
GOLDEN = case_folders(HERE / "golden")
NEGATIVE = case_folders(HERE / "negative")


def request_for(case: Path) -> BuildRequest:
    return BuildRequest((case / "build.py").read_bytes(), filename="build.py", **request_options(case))


def compile_text(text: str, **kw):
    compiled = FRONTEND.compile(BuildRequest(text.encode(), filename="build.py", **kw), FakeResolver())
    validate_document(compiled.document)
    return compiled.document


@pytest.mark.parametrize("case", GOLDEN, ids=[p.name for p in GOLDEN])
def test_golden(case: Path):
    compiled = FRONTEND.compile(request_for(case), FakeResolver())
    validate_document(compiled.document)
    check_projection(compiled.document, case / "expected.json")


@pytest.mark.parametrize("case", NEGATIVE, ids=[p.name for p in NEGATIVE])
def test_negative(case: Path):
    check_refusal(FRONTEND, request_for(case), case / "error.txt")


# --------------------------------------------------------------------------- source map


def test_every_op_points_at_the_python_line_that_made_it():
    text = (HERE / "golden" / "multi_stage" / "build.py").read_text()
    doc = compile_text(text)
    lines = text.splitlines()
    assert [(s.name, s.language) for s in doc.sources] == [("build.py", "python")]
    seen = set()
    for digest, op in doc.ops.items():
        if op.source is not None and op.source.local is not None:
            continue
        for loc in doc.metadata[digest].locations:
            code = lines[loc.line - 1]
            seen.add(loc.line)
            if op.exec is not None:
                assert ".run(" in code
            elif op.file is not None:
                assert ".copy(" in code or ".workdir(" in code
            elif op.source is not None:
                assert "image(" in code
    assert len(seen) >= 6


def test_helper_functions_are_located_inside_the_helper():
    text = (HERE / "golden" / "branches" / "build.py").read_text()
    doc = compile_text(text)
    descriptions = {m.description: m.locations[0].line for m in doc.metadata.values() if m.locations}
    check = next(line for d, line in descriptions.items() if d.endswith("RUN make check"))
    assert text.splitlines()[check - 1].strip() == 'return stage.run("make check")'


def test_locations_carry_the_column_of_the_call():
    doc = compile_text("from frontends.pydsl import image, target\nx = 1;   target('default', image('busybox').run('true'))\n")
    locs = [loc for m in doc.metadata.values() for loc in m.locations]
    assert locs and all(loc.line == 2 and loc.column == 28 for loc in locs)


def test_branches_share_their_common_steps():
    doc = compile_text((HERE / "golden" / "branches" / "build.py").read_text(), target="test")
    both = compile_text((HERE / "golden" / "branches" / "build.py").read_text())
    shared = set(doc.ops) & set(both.ops)
    assert sum(op.exec is not None for d, op in doc.ops.items() if d in shared) == 1  # "make deps"


# --------------------------------------------------------------------------- the API


def test_stages_are_immutable_values():
    base = image("busybox")
    a = base.run("echo a")
    b = base.run("echo b")
    assert base.steps == ()
    assert [s.text for s in a.steps] == ["RUN echo a"] and [s.text for s in b.steps] == ["RUN echo b"]
    with pytest.raises(AttributeError):
        base.steps = ()  # type: ignore[misc]


def test_mount_helpers_record_their_line():
    m = cache("/c", id="x")
    assert m.type == "cache" and dict(m.options) == {"target": "/c", "id": "x"}
    assert m.where.file == __file__
    s = secret("token", env="TOKEN")
    assert dict(s.options) == {"id": "token", "env": "TOKEN"}


def test_build_args_reach_python_values():
    text = ('from frontends.pydsl import arg, image, target\n'
            'V = arg("V", "1")\n'
            'target("default", image("busybox").env(V=V))\n')
    def env_of(doc):
        return next(op.image for op in doc.ops.values() if op.image).config.env
    assert "V=1" in env_of(compile_text(text))
    assert "V=2" in env_of(compile_text(text, build_args={"V": "2"}))


def test_each_load_is_a_fresh_namespace():
    text = b'from frontends.pydsl import image, target\ncount = globals().get("count", 0) + 1\nassert __name__ != "__main__"\ntarget("default", image("busybox"))\n'
    for _ in range(2):
        session, namespace = execute(BuildRequest(text, filename="build.py"))
        assert namespace["count"] == 1 and list(session.targets) == ["default"]


def test_values_are_verbatim_no_dollar_expansion():
    doc = compile_text('from frontends.pydsl import image, target\ntarget("default", image("busybox").env(A="$HOME"))\n')
    assert "A=$HOME" in next(op.image for op in doc.ops.values() if op.image).config.env


def test_frontend_claims_build_py():
    from frontends import for_file

    found = {"pydsl": (FRONTEND, "irctl")}
    assert for_file("build.py", found) is FRONTEND
    assert for_file("web.build.py", found) is FRONTEND
    assert for_file("setup.py", found) is None


def test_stage_starts_a_new_stage_like_from():
    """Chained steps are one stage; ``.stage()`` is ``FROM this``: an inherited CMD is reset by a
    later ENTRYPOINT there (Docker's rule), but kept when both are set in one stage."""
    def image_of(text):
        doc = compile_text("from frontends.pydsl import image, target\n" + text)
        return next(op.image for op in doc.ops.values() if op.image)

    same = image_of('target("default", image("busybox").cmd(["a"]).entrypoint(["e"]))\n')
    assert same.config.cmd == ("a",)
    derived = image_of('b = image("busybox").cmd(["a"])\ntarget("default", b.stage("app").entrypoint(["e"]))\n')
    assert derived.config.cmd == () and derived.config.entrypoint == ("e",)
