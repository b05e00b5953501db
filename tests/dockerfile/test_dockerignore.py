""".dockerignore semantics (moby/patternmatcher) and the walk with directory pruning."""

from __future__ import annotations

import pytest

from frontends.dockerfile.dockerignore import (
    IgnoreError, Matcher, find_ignore_file, load_matcher, read_patterns,
)


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
    assert Matcher(read_patterns("\n".join(patterns))).excluded(path) is excluded


# From moby/patternmatcher's TestMatches (patternmatcher_test.go): (pattern, path, excluded), where
# "excluded" is MatchesOrParentMatches, the question a build context asks.
UPSTREAM = [
    ("**", "file", True), ("**", "dir/file/", True), ("**/", "file", True), ("**", "/", True),
    ("**/**", "dir/file", True), ("dir/**", "dir/dir2/file", True), ("**/dir", "dir", True),
    ("**/dir", "dir/file", True), ("**/dir2/*", "dir/dir2/file", True),
    ("**/dir2/*", "dir/dir2/file/", True), ("**/dir2/**", "dir/dir2/dir3/file", True),
    ("**file", "file", True), ("**file", "dir/dir/file", True), ("**/file*", "dir/dir/file.txt", True),
    ("**/file*txt", "dir/dir/file.txt", True), ("**/**/*.txt2", "dir/dir/file.txt", False),
    ("**/*.txt", "file.txt", True), ("a**/*.txt", "a/dir/dir/file.txt", True),
    ("a/*.txt", "a/dir/file.txt", False), ("a/*.txt**", "a/file.txt", True),
    ("a[b-d]e", "ae", False), ("a[b-d]e", "ace", True), ("a[^b-d]e", "aze", True),
    (".*", ".foo", True), (".*", "foo", False), ("abc.def", "abcdef", False),
    ("abc?def", "abcZdef", True), ("abc?def", "abcdef", False), ("**/foo/bar", "dir/dir2/foo/bar", True),
    ("abc/**", "abc", False), ("abc/**", "abc/def/ghi", True), ("**/.foo", "bar.foo", False),
    ("a(b)c/def", "a(b)c/def", True), ("a.|)$(}+{bc", "a.|)$(}+{bc", True),
    ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True),
    ("a\\\\", "a\\", True), ("a\\*b", "a*b", True),
]


@pytest.mark.parametrize("pattern,path,excluded", UPSTREAM)
def test_upstream_table(pattern, path, excluded):
    assert Matcher([pattern]).excluded(path) is excluded


@pytest.mark.parametrize(
    "patterns,path,excluded",
    [
        (["**", "!util/docker/web"], "util/docker/web/foo", False),
        (["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", True),
        (["**", "!dist/*.whl"], "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", False),
    ],
)
def test_upstream_multi(patterns, path, excluded):
    assert Matcher(patterns).excluded(path) is excluded


def test_bang_alone_is_an_error():
    with pytest.raises(IgnoreError):
        Matcher(["!"])


def test_pruning_decisions():
    m = Matcher(["node_modules", "*", "!src/**/*.go", "!docs/keep.md"])
    assert m.can_prune("node_modules")
    assert m.can_prune("vendor")
    assert not m.can_prune("src")
    assert not m.can_prune("docs")
    assert m.can_prune("docs/sub")
    assert not Matcher(["*", "!**/x"]).can_prune("any/where")


def test_walk_prunes_and_reincludes(tmp_path):
    for p in ["a.md", "README.md", "src/main.go", "src/x/y.go", "src/x/y.c", "node_modules/m/i.js",
              "docs/keep.md", "docs/drop.md", "docs/sub/z.md"]:
        f = tmp_path / p
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("x")
    m = Matcher(["*.md", "!README.md", "node_modules", "src/**/*.c", "docs", "!docs/keep.md"])
    seen = list(m.walk(tmp_path))
    assert "node_modules" not in seen and not any(s.startswith("node_modules/") for s in seen)
    assert "docs/keep.md" in seen and "docs/drop.md" not in seen and "docs/sub/z.md" not in seen
    assert {"README.md", "src", "src/main.go", "src/x", "src/x/y.go"} <= set(seen)
    assert "src/x/y.c" not in seen and "a.md" not in seen


def test_walk_never_enters_pruned_directories(tmp_path, monkeypatch):
    (tmp_path / "big" / "deep").mkdir(parents=True)
    (tmp_path / "big" / "deep" / "f").write_text("x")
    (tmp_path / "ok").write_text("x")
    import os

    visited = []
    real = os.scandir
    monkeypatch.setattr(os, "scandir", lambda p: visited.append(str(p)) or real(p))
    assert list(Matcher(["big"]).walk(tmp_path)) == ["ok"]
    assert not any("big" in v for v in visited)


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
    assert load_matcher(ctx, df).excluded("x.tmp") and not load_matcher(ctx, df).excluded("x.log")
    assert load_matcher(ctx).excluded("x.log")
