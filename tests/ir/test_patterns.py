"""ir.patterns, the one dockerignore matcher, against moby/patternmatcher's own test tables
(patternmatcher_test.go), Go's filepath.Match table and a direct transcription of
``MatchesOrParentMatches``."""

from __future__ import annotations

import pytest

from ir.patterns import Matcher, PatternError, clean_path

FAIL, EXACT, INEXACT = 0, 1, 2

# TestMatches: (pattern, text, kind) — EXACT: MatchesExact; EXACT or INEXACT: MatchesOrParentMatches
MATCHES = [
    ("**", "file", EXACT), ("**", "file/", EXACT), ("**/", "file", EXACT), ("**/", "file/", EXACT),
    ("**", "/", EXACT), ("**/", "/", EXACT), ("**", "dir/file", EXACT), ("**/", "dir/file", EXACT),
    ("**", "dir/file/", EXACT), ("**/", "dir/file/", EXACT), ("**/**", "dir/file", EXACT),
    ("**/**", "dir/file/", EXACT), ("dir/**", "dir/file", EXACT), ("dir/**", "dir/file/", EXACT),
    ("dir/**", "dir/dir2/file", EXACT), ("dir/**", "dir/dir2/file/", EXACT), ("**/dir", "dir", EXACT),
    ("**/dir", "dir/file", INEXACT), ("**/dir2/*", "dir/dir2/file", EXACT),
    ("**/dir2/*", "dir/dir2/file/", INEXACT), ("**/dir2/**", "dir/dir2/dir3/file", EXACT),
    ("**/dir2/**", "dir/dir2/dir3/file/", EXACT), ("**file", "file", EXACT), ("**file", "dir/file", EXACT),
    ("**/file", "dir/file", EXACT), ("**file", "dir/dir/file", EXACT), ("**/file", "dir/dir/file", EXACT),
    ("**/file*", "dir/dir/file", EXACT), ("**/file*", "dir/dir/file.txt", EXACT),
    ("**/file*txt", "dir/dir/file.txt", EXACT), ("**/file*.txt", "dir/dir/file.txt", EXACT),
    ("**/file*.txt*", "dir/dir/file.txt", EXACT), ("**/**/*.txt", "dir/dir/file.txt", EXACT),
    ("**/**/*.txt2", "dir/dir/file.txt", FAIL), ("**/*.txt", "file.txt", EXACT),
    ("**/**/*.txt", "file.txt", EXACT), ("a**/*.txt", "a/file.txt", EXACT),
    ("a**/*.txt", "a/dir/file.txt", EXACT), ("a**/*.txt", "a/dir/dir/file.txt", EXACT),
    ("a/*.txt", "a/dir/file.txt", FAIL), ("a/*.txt", "a/file.txt", EXACT), ("a/*.txt**", "a/file.txt", EXACT),
    ("a[b-d]e", "ae", FAIL), ("a[b-d]e", "ace", EXACT), ("a[b-d]e", "aae", FAIL), ("a[^b-d]e", "aze", EXACT),
    (".*", ".foo", EXACT), (".*", "foo", FAIL), ("abc.def", "abcdef", FAIL), ("abc.def", "abc.def", EXACT),
    ("abc.def", "abcZdef", FAIL), ("abc?def", "abcZdef", EXACT), ("abc?def", "abcdef", FAIL),
    ("**/foo/bar", "foo/bar", EXACT), ("**/foo/bar", "dir/foo/bar", EXACT),
    ("**/foo/bar", "dir/dir2/foo/bar", EXACT), ("abc/**", "abc", FAIL), ("abc/**", "abc/def", EXACT),
    ("abc/**", "abc/def/ghi", EXACT), ("**/.foo", ".foo", EXACT), ("**/.foo", "bar.foo", FAIL),
    ("a(b)c/def", "a(b)c/def", EXACT), ("a(b)c/def", "a(b)c/xyz", FAIL), ("a.|)$(}+{bc", "a.|)$(}+{bc", EXACT),
    ("dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
     "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", EXACT),
    ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", EXACT),
    ("a\\\\", "a\\", EXACT), ("a\\*b", "a*b", EXACT),
]

MULTI = [
    (["**", "!util/docker/web"], "util/docker/web/foo", FAIL),
    (["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", EXACT),
    (["**", "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl"],
     "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", FAIL),
    (["**", "!dist/*.whl"], "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", FAIL),
]

# TestMatch: Go's filepath.Match table as patternmatcher runs it (None: the pattern is rejected)
GO_MATCH = [
    ("abc", "abc", True), ("*", "abc", True), ("*c", "abc", True), ("a*", "a", True), ("a*", "abc", True),
    ("a*", "ab/c", True), ("a*/b", "abc/b", True), ("a*/b", "a/c/b", False),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True), ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False), ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True), ("a*b?c*x", "abxbbxdbxebxczzy", False),
    ("ab[c]", "abc", True), ("ab[b-d]", "abc", True), ("ab[e-g]", "abc", False), ("ab[^c]", "abc", False),
    ("ab[^b-d]", "abc", False), ("ab[^e-g]", "abc", True), ("a\\*b", "a*b", True), ("a\\*b", "ab", False),
    ("a?b", "a☺b", True), ("a[^a]b", "a☺b", True), ("a???b", "a☺b", False), ("a[^a][^a][^a]b", "a☺b", False),
    ("[a-ζ]*", "α", True), ("*[a-ζ]", "A", False), ("a?b", "a/b", False), ("a*b", "a/b", False),
    ("[\\]a]", "]", True), ("[\\-]", "-", True), ("[x\\-]", "x", True), ("[x\\-]", "-", True),
    ("[x\\-]", "z", False), ("[\\-x]", "x", True), ("[\\-x]", "-", True), ("[\\-x]", "a", False),
    ("[]a]", "]", None), ("[-]", "-", None), ("[x-]", "x", None), ("[x-]", "-", None), ("[x-]", "z", None),
    ("[-x]", "x", None), ("[-x]", "-", None), ("[-x]", "a", None), ("\\", "a", None), ("[a-b-c]", "a", None),
    ("[", "a", None), ("[^", "a", None), ("[^bc", "a", None), ("a[", "a", None), ("a[", "ab", None),
    ("*x", "xxx", True),
]


@pytest.mark.parametrize("pattern,text,kind", MATCHES)
def test_matches_exact(pattern, text, kind):
    assert Matcher([pattern]).matches_exact(text) is (kind == EXACT)


@pytest.mark.parametrize("pattern,text,kind", MATCHES)
def test_matches_or_parent_matches(pattern, text, kind):
    assert Matcher([pattern]).matches(text) is (kind != FAIL)


@pytest.mark.parametrize("patterns,text,kind", MULTI)
def test_multi_pattern(patterns, text, kind):
    assert Matcher(patterns).matches(text) is (kind != FAIL)


@pytest.mark.parametrize("pattern,text,expected", GO_MATCH)
def test_go_filepath_match_table(pattern, text, expected):
    if expected is None:
        with pytest.raises(PatternError):
            Matcher([pattern])
        return
    assert Matcher([pattern]).matches(clean_path(text)) is expected


def test_exceptions_and_order():
    assert Matcher(["!fileutils.go", "*.go"]).matches("fileutils.go")
    assert not Matcher(["*.go", "!fileutils.go"]).matches("fileutils.go")
    for first in ("docs", "docs/", "docs/*"):
        assert not Matcher([first, "!docs/README.md"]).matches("docs/README.md")
        assert Matcher([first, "!docs/README.md"]).matches("docs/other.md")
    assert not Matcher(["*.go"]).matches(".")
    assert not Matcher([]).matches("any/path/there")


def test_cleaning_and_errors():
    m = Matcher(["  docs  ", "", "config", "  !docs/README.md  "])
    assert [p.text for p in m.patterns] == ["docs", "config", "docs/README.md"]
    assert m.has_exclusions and m.patterns[2].exclusion
    assert Matcher(["/a/../b/"]).matches("b/c")
    assert Matcher(["./x//y"]).matches("x/y")
    with pytest.raises(PatternError):
        Matcher(["!"])
    with pytest.raises(PatternError):
        Matcher(["["])


def test_pruning_answers():
    m = Matcher(["node_modules", "*.log", "!keep/*.log"])
    assert not m.may_unmatch_under("node_modules")  # excluded, and nothing can come back: prune
    assert m.may_unmatch_under("src")
    assert Matcher(["build", "!build/keep.txt"]).may_unmatch_under("build")
    assert not Matcher(["build", "!other/keep.txt"]).may_unmatch_under("build")
    assert Matcher(["build", "!**/keep.txt"]).may_unmatch_under("build")
    inc = Matcher(["src/app/*.py"])
    assert inc.may_match_under("src") and inc.may_match_under("src/app")
    assert not inc.may_match_under("docs") and not inc.may_match_under("src/lib")
    assert Matcher(["**/*.py"]).may_match_under("anything/deep")
    assert Matcher(["src"]).may_match_under("src/x")  # inside a matched directory everything matches


def test_pruning_decisions_for_an_ignore_file():
    # (from the Dockerfile frontend's former matcher: "can prune" is "nothing below may be unmatched")
    m = Matcher(["node_modules", "*", "!src/**/*.go", "!docs/keep.md"])
    assert not m.may_unmatch_under("node_modules")
    assert not m.may_unmatch_under("vendor")
    assert m.may_unmatch_under("src")
    assert m.may_unmatch_under("docs")
    assert not m.may_unmatch_under("docs/sub")
    assert Matcher(["*", "!**/x"]).may_unmatch_under("any/where")


@pytest.mark.parametrize("pattern,message", [
    ("!", 'illegal exclusion pattern: "!"'),
    ("[", "syntax error in pattern '[': missing closing ]"),
    ("a/[^bc", "syntax error in pattern 'a/[^bc': missing closing ]"),
    ("[x\\", "syntax error in pattern '[x\\\\': missing closing ]"),
    ("[]a]", "syntax error in pattern '[]a]': bad character class"),
    ("[a-b-c]", "syntax error in pattern '[a-b-c]': bad character class"),
    ("a\\", "syntax error in pattern 'a\\\\': trailing backslash"),
])
def test_error_messages(pattern, message):
    with pytest.raises(PatternError) as e:
        Matcher([pattern])
    assert str(e.value) == message


def test_unclean_paths_do_not_hang():
    assert not Matcher(["a"]).matches("//")
    assert Matcher(["**"]).matches("a//b")


def test_parent_directory_matching_is_complete():
    # MatchesOrParentMatches checks every parent, not only the first len(pattern) components
    m = Matcher(["a/b"])
    assert m.matches("a/b/c/d/e")
    assert not m.matches("x/a/b")
    assert Matcher(["*/tmp/*"]).matches("x/tmp/y/z")


# ---------------------------------------------------------------------------------------------- properties

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.support.random_patterns import PATHS, PATTERN  # noqa: E402


def _matcher(patterns):
    try:
        return Matcher(patterns)
    except PatternError:
        return None


@settings(max_examples=400, deadline=None)
@given(st.lists(PATTERN, min_size=1, max_size=4))
def test_pruning_is_sound(patterns):
    """A pruned directory never hides a path that would get the other verdict."""
    m = _matcher(patterns)
    if m is None:
        return
    dirs = {p.rsplit("/", i)[0] for p in PATHS for i in range(1, p.count("/") + 1)}
    for d in dirs:
        below = [p for p in PATHS if p.startswith(d + "/")]
        if not m.may_match_under(d):
            assert not any(m.matches(p) for p in below), (patterns, d)
        if not m.may_unmatch_under(d):
            assert all(m.matches(p) for p in below), (patterns, d)


def _upstream_verdict(m: Matcher, path: str) -> bool:
    """patternmatcher's ``MatchesOrParentMatches`` loop as written upstream: every pattern against the
    path and each of its parents, no memo, no bit masks."""
    matched = False
    parent = path.rpartition("/")[0]
    parents = ["/".join(parent.split("/")[: i + 1]) for i in range(parent.count("/") + 1)] if parent else []
    for p in m.patterns:
        if p.exclusion != matched:
            continue
        if p.match(path) or any(p.match(d) for d in parents):
            matched = not p.exclusion
    return matched


@settings(max_examples=300, deadline=None)
@given(st.lists(PATTERN, min_size=1, max_size=4))
def test_same_verdicts_as_the_upstream_loop(patterns):
    """The memoised per-directory masks give patternmatcher's verdicts (this replaces the test that
    the backend's matcher and the Dockerfile frontend's former copy agreed: there is one matcher)."""
    m = _matcher(patterns)
    if m is None:
        return
    for path in PATHS:
        assert m.matches(path) == _upstream_verdict(m, path), (patterns, path)
    fresh = Matcher(patterns)  # the same answers in another order (nothing memoised yet)
    for path in reversed(PATHS):
        assert fresh.matches(path) == _upstream_verdict(m, path), (patterns, path)
