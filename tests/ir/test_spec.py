"""The spec cannot go stale: its schema, tables, examples and vectors are checked against the code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

from ir import codec, jsonform, schema, spec_tables, validate

SPEC = Path(__file__).resolve().parents[2] / "spec"


def test_schema_file_is_the_generated_schema() -> None:
    assert (SPEC / "ir.schema.json").read_text(encoding="utf-8") == schema.schema_json(), \
        "regenerate: python -m ir.schema > spec/ir.schema.json"


def test_schema_is_a_valid_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(json.loads((SPEC / "ir.schema.json").read_text()))


def test_field_and_feature_tables_are_generated_from_ops() -> None:
    text = (SPEC / "ir.md").read_text(encoding="utf-8")
    assert spec_tables.splice(text) == text, "regenerate: python -m ir.spec_tables --write spec/ir.md"


def _json_blocks(path: Path) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(1))
            for m in re.finditer(r"^```json\n(.*?)^```$", text, re.S | re.M)]


EXAMPLES = [(p.name, line, block) for p in sorted(SPEC.glob("*.md")) for line, block in _json_blocks(p)]


def test_the_spec_has_examples() -> None:
    assert len([e for e in EXAMPLES if e[0] == "ir.md"]) >= 2


@pytest.mark.parametrize("name, line, block", EXAMPLES, ids=[f"{n}:{line}" for n, line, _ in EXAMPLES])
def test_every_json_example_in_the_spec_is_a_valid_document(name: str, line: int, block: str) -> None:
    value = json.loads(block)
    assert validate.schema_errors(value) == []
    doc = jsonform.document_from_json(value)
    validate.validate_document(doc)
    assert json.loads(jsonform.dumps(doc)) == value  # and it is in canonical form already
    assert validate.load_and_validate(codec.dump_document(doc)) == doc


def test_the_worked_example_bytes_and_digest() -> None:
    text = (SPEC / "ir.md").read_text(encoding="utf-8")
    hexes = re.search(r"```text\n((?:[0-9a-f]{2} )+[0-9a-f]{2})\n", text).group(1)
    from ir import ops

    op = ops.Op(source=ops.SourceOp(scratch=ops.ScratchSource()))
    assert codec.canonical_bytes(op).hex(" ") == hexes
    assert codec.op_digest(op) in text


def test_every_known_feature_and_class_is_in_the_spec() -> None:
    from ir import features

    text = (SPEC / "ir.md").read_text(encoding="utf-8")
    for name in features.KNOWN:
        assert f"`{name}`" in text
    for cls in spec_tables.classes():
        assert f"#### {cls.__name__}\n" in text


def test_framing_constants_match_the_spec() -> None:
    text = (SPEC / "ir.md").read_text(encoding="utf-8")
    assert " ".join(f"{c:02X}" for c in codec.MAGIC) in text
    assert codec.MEDIA_TYPE in text and codec.MEDIA_TYPE_ZSTD in text and codec.MEDIA_TYPE_JSON in text
    assert codec.HEADER.size == 12 and "12-byte header" in text
