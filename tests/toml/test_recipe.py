"""The TOML recipe frontend: golden IR folders, negative folders with the exact error text, the
key-line scanner, and the schema against the spec's examples.

``golden/<case>/`` holds ``recipe.toml``, an optional ``request.json`` (``target``,
``build_args``) and ``expected.json`` — the readable projection of the compiled document that the
Dockerfile golden tests use (``tests.support.projection.project``).  ``negative/<case>/``
holds ``recipe.toml`` (and maybe ``request.json``) and ``error.txt``.  A missing expected file
fails; ``IRCTL_REGEN_GOLDEN=1`` rewrites the expected files (``tests.support.golden``); review the
diff by hand.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import jsonschema
import pytest

from frontends import BuildRequest, FrontendError
from frontends.toml import FRONTEND
from frontends.toml.lines import format_path, key_lines
from frontends.toml.recipe import read_recipe, schema
from ir import ops
from ir.validate import validate_document
from tests.support.golden import case_folders, check_projection, check_refusal, request_options
from tests.support.resolver import FakeResolver

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
GOLDEN = case_folders(HERE / "golden")
NEGATIVE = case_folders(HERE / "negative")


def request_for(case: Path) -> BuildRequest:
    return BuildRequest((case / "recipe.toml").read_bytes(), filename="recipe.toml", **request_options(case))


@pytest.mark.parametrize("case", GOLDEN, ids=[p.name for p in GOLDEN])
def test_golden(case: Path):
    compiled = FRONTEND.compile(request_for(case), FakeResolver())
    validate_document(compiled.document)
    for digest, op in compiled.document.ops.items():  # every op made by a step has a source-map entry
        if not (op.source and op.source.local):
            assert compiled.document.metadata[digest].locations, op.kind
    check_projection(compiled.document, case / "expected.json")


@pytest.mark.parametrize("case", NEGATIVE, ids=[p.name for p in NEGATIVE])
def test_negative(case: Path):
    check_refusal(FRONTEND, request_for(case), case / "error.txt")


def test_error_names_line_and_key_path():
    text = (HERE / "negative" / "mount_type" / "recipe.toml").read_bytes()
    with pytest.raises(FrontendError) as info:
        FRONTEND.compile(BuildRequest(text, filename="recipe.toml"), FakeResolver())
    assert str(info.value) == ('recipe.toml:17: stages.app.steps[3].mounts[0].type: unknown mount type "cahce" '
                               '(did you mean "cache"?)')


def test_frontend_claims_recipe_names():
    from frontends import for_file

    found = {"toml": (FRONTEND, "irctl")}
    for name in ("irctl.toml", "recipe.toml", "web.irctl.toml"):
        assert for_file(name, found) is FRONTEND
    assert for_file("pyproject.toml", found) is None


# --------------------------------------------------------------------------- key lines


def test_key_lines_cover_tables_inline_tables_and_arrays():
    text = ('a = 1\n[t]\nx = { y = [\n  1,\n  { z = "]}" },\n] }\n[[arr]]\nk = """\nmulti\n"""\n'
            '[[arr]]\n"quoted.key" = \'v\'\n[arr.sub]\nq = 2\n')
    lines = key_lines(text)
    assert lines[("a",)] == 1
    assert lines[("t", "x", "y", 0)] == 4
    assert lines[("t", "x", "y", 1, "z")] == 5
    assert lines[("arr", 0, "k")] == 8
    assert lines[("arr", 1, "quoted.key")] == 12
    assert lines[("arr", 1, "sub", "q")] == 14
    assert format_path(("arr", 1, "quoted.key")) == 'arr[1]."quoted.key"'


def test_key_lines_unescape_quoted_keys_as_toml_does():
    """Non-ASCII and escaped quoted keys get the same names as tomllib gives them."""
    import tomllib

    text = '"é\\u00e9\\t\\"x" = 1\n"naïve" = 2\n"a\\\\b" = 3\n'
    lines = key_lines(text)
    for key, line in zip(tomllib.loads(text), (1, 2, 3)):
        assert lines[(key,)] == line


def test_key_lines_of_every_example_match_tomllib():
    """Every path tomllib reports in our recipes has a line."""
    files = [*ROOT.glob("examples/recipe/*.toml"), *HERE.glob("golden/*/recipe.toml")]
    assert files
    for f in files:
        text = f.read_text()
        lines = key_lines(text)

        def walk(value, path):
            if path:
                assert path in lines, (f, path)
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(v, path + (k,))
            elif isinstance(value, list):
                for n, v in enumerate(value):
                    walk(v, path + (n,))

        walk(tomllib.loads(text), ())


# --------------------------------------------------------------------------- schema and spec


def test_schema_is_valid_and_is_the_spec_file():
    jsonschema.Draft202012Validator.check_schema(schema())
    assert schema() == json.loads((ROOT / "spec" / "recipe.schema.json").read_text())


def test_schema_value_sets_are_the_irs():
    """The recipe schema spells the IR's closed value sets out (JSON Schema cannot import them):
    they must be ``ir.ops``' own, in the same order, so a hint lists what the IR accepts."""
    defs = schema()["$defs"]
    mount = defs["mount"]["properties"]
    run = next(d["properties"] for d in defs.values() if "network" in d.get("properties", {}))
    assert tuple(mount["type"]["enum"]) == ops.MOUNT_TYPES
    assert tuple(mount["sharing"]["enum"]) == ops.SHARING_MODES
    assert tuple(run["network"]["enum"]) == ops.NETWORK_MODES
    assert tuple(run["security"]["enum"]) == ops.SECURITY_MODES


def _spec_examples() -> list[str]:
    text = (ROOT / "spec" / "recipe.md").read_text()
    return re.findall(r"```toml\n(.*?)```", text, re.S)


def test_every_toml_example_in_the_spec_is_valid_and_compiles():
    examples = _spec_examples()
    assert len(examples) >= 3
    validator = jsonschema.Draft202012Validator(schema())
    for text in examples:
        if "from" not in tomllib.loads(text)["stages"].get("app", {"from": ""}):  # a fragment: steps of app
            text = ('[stages.deps]\nfrom = "busybox"\n[stages.build]\nfrom = "busybox"\n'
                    '[stages.app]\nfrom = "busybox"\n' + text)
        doc = tomllib.loads(text)
        errors = list(validator.iter_errors(doc))
        assert not errors, (text, errors[0].message)
        FRONTEND.compile(BuildRequest(text.encode(), filename="recipe.toml"), FakeResolver())


def test_schema_rejects_what_the_reader_rejects():
    bad = {"stages": {"app": {"from": "x", "steps": [{"run": "x", "mounts": [{"type": "cahce"}]}]}}}
    assert list(jsonschema.Draft202012Validator(schema()).iter_errors(bad))
    with pytest.raises(FrontendError):
        read_recipe('[stages.app]\nfrom = "x"\nsteps = [{ run = "x", mounts = [{ type = "cahce" }] }]\n')


def test_dollar_escapes_and_expansion_rules():
    text = ('[stages.app]\nfrom = "busybox"\nsteps = [\n  { env = { A = "1" } },\n'
            '  { env = { B = "${A}-\\\\$A-${UNSET:-dflt}", C = \'say "hi"\' } },\n]\n')
    doc = FRONTEND.compile(BuildRequest(text.encode(), filename="recipe.toml"), FakeResolver()).document
    image = next(op.image for op in doc.ops.values() if op.image)
    assert "B=1-$A-dflt" in image.config.env
    assert 'C=say "hi"' in image.config.env
