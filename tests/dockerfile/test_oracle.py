"""Differential tests: our syntax layer against the reference parser's JSON for every corpus file.

The oracle is BuildKit v0.12.5 through a Python binding.  Where current BuildKit parses differently
(``VERSION-SKEW.tsv``) we follow current BuildKit: those cases are strict xfails here and their
current behaviour is asserted in ``test_skew.py``.  Binding flaws (strings cut at NUL) are xfails too.
"""

from __future__ import annotations

from collections import Counter

import pytest

from frontends.dockerfile.parse import parse_file
from frontends.dockerfile.syntax import parse_syntax
from frontends.errors import SourceError
from tests.dockerfile.corpus import (
    BINDING_GAPS, CORPUS, dockerfiles_with_oracle, load_oracle, needs_corpus, rel, version_skew,
)

FILES = dockerfiles_with_oracle()


def ours(path) -> dict:
    """Our parse of ``path`` in the oracle's JSON form, or ``{"error": ...}``."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        return {"error": str(e)}
    try:
        return parse_syntax(text, rel(path)).to_oracle_json()
    except SourceError as e:
        return {"error": e.message}


def agrees(path) -> bool:
    want, got = load_oracle(path), ours(path)
    if "error" in want or "error" in got:
        return ("error" in want) == ("error" in got)
    return got == want


def _param(path):
    r = rel(path)
    marks = []
    if r in version_skew():
        marks.append(pytest.mark.xfail(strict=True, reason="oracle is BuildKit v0.12.5; we follow "
                                       f"current BuildKit: {version_skew()[r]}"))
    elif r in BINDING_GAPS:
        marks.append(pytest.mark.xfail(strict=True, reason=BINDING_GAPS[r]))
    return pytest.param(path, id=r, marks=marks)


@needs_corpus
@pytest.mark.parametrize("path", [_param(p) for p in FILES])
def test_matches_oracle(path):
    want, got = load_oracle(path), ours(path)
    if "error" in want:
        assert "error" in got, f"oracle rejects this file ({want['error']}) but we accept it"
        return
    assert "error" not in got, got.get("error")
    for i, (g, w) in enumerate(zip(got["instructions"], want["instructions"])):
        assert g == w, f"instruction {i} (line {w['start_line']})"
    assert len(got["instructions"]) == len(want["instructions"])


@needs_corpus
def test_agreement_figures(capsys):
    """Agreement per corpus folder; real-world must agree everywhere except documented skew."""
    total, agree = Counter(), Counter()
    for path in FILES:
        group = rel(path).split("/")[0]
        total[group] += 1
        agree[group] += agrees(path)
    expected_off = Counter(k.split("/")[0] for k in {**version_skew(), **BINDING_GAPS})
    with capsys.disabled():
        for g in sorted(total):
            print(f"\n  oracle agreement {g}: {agree[g]}/{total[g]} "
                  f"(documented skew/binding gaps: {expected_off[g]})", end="")
        print()
    for g in total:
        assert agree[g] == total[g] - expected_off[g], g


# Real-world files that BuildKit's instruction layer itself rejects (buildah-only syntax or files
# that exist to fail): the typed parse must reject them too, everything else must parse.
REJECTED_REAL_WORLD = {
    "containers__buildah/tests__bud__add-checksum__Containerfile.bad.Dockerfile": "missing a value on flag: --checksum",
    "containers__buildah/tests__bud__add-chmod__Dockerfile.bad.Dockerfile": "missing a value on flag: --chmod",
    "containers__buildah/tests__bud__copy-chmod__Dockerfile.bad.Dockerfile": "missing a value on flag: --chmod",
    "containers__buildah/tests__bud__base-with-arg__Containerfile.Dockerfile": "invalid name for build stage",
    "containers__buildah/tests__bud__buildkit-mount__Dockerfile.Dockerfile": "invalid field 'z'",
    "containers__buildah/tests__bud__verify-cleanup__Dockerfile.Dockerfile": "invalid field 'z'",
    "docker__compose/pkg__e2e__fixtures__wrong-composefile__service1__Dockerfile.Dockerfile": "unknown instruction: WRONG",
}

REAL_WORLD = [p for p in FILES if rel(p).startswith("real-world/")]


@needs_corpus
@pytest.mark.parametrize("path", REAL_WORLD, ids=[rel(p) for p in REAL_WORLD])
def test_real_world_typed(path):
    key = rel(path)[len("real-world/"):]
    if key in REJECTED_REAL_WORLD:
        with pytest.raises(SourceError, match=REJECTED_REAL_WORLD[key]):
            parse_file(str(path))
        return
    df = parse_file(str(path))
    assert len(df.instructions) == len(load_oracle(path)["instructions"])
    for ins in df.instructions:
        assert ins.span.line >= 1 and ins.span.end_line >= ins.span.line


def test_corpus_location_is_relative_to_repo():
    assert CORPUS.parts[-2:] == ("shared", "corpus")
