"""Upstream golden tests from BuildKit's parser: ``testfiles/*/result`` (``Node.Dump()``),
``testfiles-negative``, ``testfile-line`` and the expected heredocs of ``TestParseExtractsHeredoc``."""

from __future__ import annotations

import json

import pytest

from frontends.dockerfile.syntax import parse_syntax
from frontends.errors import SourceError
from tests.dockerfile.corpus import BUILDKIT, needs_corpus

PARSER = BUILDKIT / "parser"
CASES = sorted(p.name for p in (PARSER / "testfiles").iterdir()) if PARSER.is_dir() else []
NEGATIVE = sorted(p.name for p in (PARSER / "testfiles-negative").iterdir()) if PARSER.is_dir() else []


@needs_corpus
@pytest.mark.parametrize("case", CASES)
def test_dump_matches_upstream_result(case):
    """Current BuildKit's expectation (ENV/LABEL with their separator node)."""
    d = PARSER / "testfiles" / case
    tree = parse_syntax((d / "Dockerfile").read_text("utf-8"), "Dockerfile")
    assert tree.dump() == (d / "result").read_text("utf-8")


@needs_corpus
@pytest.mark.parametrize("case", NEGATIVE)
def test_negative_cases_raise(case):
    text = (PARSER / "testfiles-negative" / case / "Dockerfile").read_text("utf-8")
    with pytest.raises(SourceError):
        parse_syntax(text, "Dockerfile")


@needs_corpus
def test_line_numbers():
    d = PARSER / "testfile-line"
    want = json.loads((d / "expected-lines.json").read_text("utf-8"))
    tree = parse_syntax((d / "Dockerfile").read_text("utf-8"), "Dockerfile")
    assert len(tree.nodes) == want["children"]
    assert [[n.start_line, n.end_line] for n in tree.nodes] == want["child_lines"]
    assert tree.nodes[0].start_line == want["ast_start_line"]
    assert tree.nodes[-1].end_line == want["ast_end_line"]


@needs_corpus
def test_heredocs_match_upstream_expectations():
    """All 27 expectations of ``TestParseExtractsHeredoc`` (Name, Content, Expand, Chomp, FD),
    including the two ``<<  EOF`` cases that are heredocs since BuildKit v0.22."""
    base = BUILDKIT.parent.parent / "go-test-snippets" / "parser__parser_heredoc_test_go"
    want = json.loads((base / "L00011.expected-heredocs.json").read_text("utf-8"))["expected"]
    tree = parse_syntax((base / "L00011.Dockerfile").read_text("utf-8"), "Dockerfile")
    assert len(tree.nodes) - 1 == len(want)
    zero = {"Name": "", "Content": "", "Expand": False, "Chomp": False, "FileDescriptor": 0}
    for i, (node, w) in enumerate(zip(tree.nodes[1:], want)):
        got = [{"Name": h.name, "Content": h.content, "Expand": h.expand, "Chomp": h.chomp,
                "FileDescriptor": h.file_descriptor} for h in node.heredocs]
        assert got == [{**zero, **h} for h in (w or [])], f"entry {i}: {node.original!r}"
