""".dockerignore: reading and finding the file, and what its patterns leave out.

The matcher is ``ir.patterns`` (tested against moby/patternmatcher's tables in
``tests/ir/test_patterns.py``); here, the patterns as the ignore file gives them to it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frontends.dockerfile.dockerignore import (
    IgnoreError, find_ignore_file, ignore_matcher, load_matcher, read_patterns,
)
from ir.patterns import Matcher, PatternError
from tests.support.random_patterns import PATHS, PATTERN


def test_reading_cleans_and_skips():
    text = "\ufeff# comment\n\n  *.md  \n!README.md\n/build/\n./a/../b\n!  /keep\n #not a comment\n"
    assert read_patterns(text) == ["*.md", "!README.md", "build", "b", "!keep", "#not a comment"]


@pytest.mark.parametrize(
    "patterns,path,excluded",
    [
        (["*.md"], "a.md", True),
        (["*.md"], "docs/a.md", False),  # * does not cross /
        (["**/*.md"], "docs/x/a.md", True),
        (["**/*.md"], "a.md", True),  # **/ also matches zero directories
        (["docs"], "docs/deep/file", True),  # a parent match excludes the children
        (["docs/**"], "docs", False),
        (["docs/**"], "docs/a", True),
        (["a?c"], "abc", True),
        (["a?c"], "a/c", False),
        (["[a-c]x"], "bx", True),
        (["[!a]x"], "!x", True),  # Go regexp: '!' is literal in a class
        (["\\*star"], "*star", True),
        (["\\*star"], "xstar", False),
        (["a.b"], "axb", False),  # regexp metacharacters are literal
        (["*", "!keep"], "keep", False),
        (["*", "!keep", "keep"], "keep", True),  # last match wins
        (["*", "!src/**/*.go"], "src/a/b.go", False),
        (["*", "!src/**/*.go"], "src/a/b.c", True),
        (["**foo"], "barfoo", True),  # suffix match, as patternmatcher does
        (["**"], "anything/at/all", True),
        (["node_modules"], "node_modules", True),
        (["/abs/path"], "abs/path", True),
    ],
)
def test_matching(patterns, path, excluded):
    assert ignore_matcher(read_patterns("\n".join(patterns))).matches(path) is excluded


@pytest.mark.parametrize("text,message", [
    ("!\n", 'illegal exclusion pattern: "!"'),
    ("  !  \n", 'illegal exclusion pattern: "!"'),
    ("src/[ab\n", "syntax error in pattern 'src/[ab': missing closing ]"),
    ("[x-]\n", "syntax error in pattern '[x-]': bad character class"),
    ("a\\\n", "syntax error in pattern 'a\\\\': trailing backslash"),
])
def test_a_bad_pattern_is_a_frontend_error(text, message):
    with pytest.raises(IgnoreError) as e:
        ignore_matcher(read_patterns(text))
    assert str(e.value) == message


def test_find_ignore_file(tmp_path):
    ctx = tmp_path / "ctx"
    (ctx / "build").mkdir(parents=True)
    df = ctx / "build" / "app.Dockerfile"
    df.write_text("FROM a\n")
    assert find_ignore_file(ctx, df) is None
    (ctx / ".dockerignore").write_text("*.log\n")
    assert find_ignore_file(ctx, df) == ctx / ".dockerignore"
    (ctx / "build" / "app.Dockerfile.dockerignore").write_text("*.tmp\n")
    assert find_ignore_file(ctx, df) == ctx / "build" / "app.Dockerfile.dockerignore"
    assert load_matcher(ctx, df).matches("x.tmp") and not load_matcher(ctx, df).matches("x.log")
    assert load_matcher(ctx).matches("x.log")
    assert not load_matcher(tmp_path).matches("x.log")


@settings(max_examples=300, deadline=None)
@given(st.lists(PATTERN, min_size=1, max_size=4))
def test_the_ignore_file_gives_the_backend_the_same_verdicts(patterns):
    """Patterns read from an ignore file (what the frontend checks COPY sources with) and the same
    lines taken as they are (what any IR emitter may hand the backend) are accepted, rejected and
    matched alike."""
    try:
        raw = Matcher(patterns)
    except PatternError:
        raw = None
    try:
        read = ignore_matcher(read_patterns("\n".join(patterns)))
    except IgnoreError:
        read = None
    assert (raw is None) == (read is None)
    if raw is not None:
        for path in PATHS:
            assert raw.matches(path) == read.matches(path), (patterns, path)
