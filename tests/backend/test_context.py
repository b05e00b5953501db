"""backend.fileops.context: scan identity, pruning, the stat cache (hit path reads nothing, racy entries), and
selection_digest (what one COPY reads; same from a scan and from the directory)."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import backend.fileops.context as context_mod
from backend.fileops.context import ContextScan, StatCache, scan_context, selection_digest
from backend.fileops.copy import FileOpError, SourceView
from ir.ops import CopyAction
from tests.support.random_trees import PATTERNS, build, trees


def make_ctx(root: Path) -> Path:
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "node_modules" / "dep").mkdir(parents=True)
    (root / "src" / "main.py").write_text("print(1)\n")
    (root / "src" / "pkg" / "mod.py").write_text("x = 1\n")
    (root / "docs" / "readme.md").write_text("# hi\n")
    (root / "node_modules" / "dep" / "index.js").write_text("js\n")
    (root / "top.txt").write_text("top\n")
    os.symlink("src/main.py", root / "link")
    return root


RACY_NS = 50_000_000


def old(path: Path, seconds: float = 10) -> None:
    """Backdate a tree's mtimes, then let its ctimes leave the (shortened) racy window."""
    t = time.time() - seconds
    for p in [path, *path.rglob("*")]:
        os.utime(p, (t, t), follow_symlinks=False)
    time.sleep(RACY_NS / 1e9 * 1.5)


@pytest.fixture(autouse=True)
def short_racy_window(monkeypatch):
    """The real window is a second; the tests shorten it so they need not sleep that long."""
    monkeypatch.setattr(context_mod, "RACY_WINDOW_NS", RACY_NS)


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    return make_ctx(tmp_path / "ctx")


# ---------------------------------------------------------------------------------------------- identity


def test_entries_and_types(ctx):
    scan = scan_context(ctx)
    assert scan.entries["src"].type == "dir"
    assert scan.entries["src/main.py"].type == "file" and scan.entries["src/main.py"].size == 9
    assert scan.entries["src/main.py"].digest.startswith("sha256:")
    assert scan.entries["link"].type == "symlink" and scan.entries["link"].target == "src/main.py"
    assert scan.identity.startswith("sha256:") and len(scan.identity) == 71


def test_identity_ignores_mtime_owner_and_location(ctx, tmp_path):
    first = scan_context(ctx).identity
    os.utime(ctx / "top.txt", (1, 1))
    os.chown(ctx / "src" / "main.py", 1234, 5678)
    assert scan_context(ctx).identity == first
    copy = tmp_path / "elsewhere"
    shutil.copytree(ctx, copy, symlinks=True)  # new inodes, new mtimes, another walk order
    os.chmod(copy, os.stat(ctx).st_mode)
    assert scan_context(copy).identity == first


@pytest.mark.parametrize("change", ["content", "mode", "rename", "link", "new-empty-dir", "delete"])
def test_identity_changes(ctx, change):
    first = scan_context(ctx).identity
    if change == "content":
        (ctx / "top.txt").write_text("tOp\n")
    elif change == "mode":
        os.chmod(ctx / "top.txt", 0o755)
    elif change == "rename":
        os.rename(ctx / "top.txt", ctx / "top2.txt")
    elif change == "link":
        os.unlink(ctx / "link")
        os.symlink("src/pkg/mod.py", ctx / "link")
    elif change == "new-empty-dir":
        (ctx / "empty").mkdir()
    else:
        os.unlink(ctx / "docs" / "readme.md")
    assert scan_context(ctx).identity != first


def test_patterns_filter_and_prune(ctx, monkeypatch):
    listed = []
    real = os.scandir

    def spy(path="."):
        listed.append(os.path.relpath(os.fspath(path), ctx))
        return real(path)

    monkeypatch.setattr(context_mod.os, "scandir", spy)
    scan = scan_context(ctx, exclude=("node_modules", "**/*.md", "!docs/keep.md"))
    assert "node_modules" not in scan.entries and "docs/readme.md" not in scan.entries
    assert "node_modules" not in listed  # pruned: no exception can reach inside it
    assert "docs" not in scan.entries or scan.entries["docs"].type == "dir"
    inc = scan_context(ctx, include=("src/pkg",))
    assert sorted(inc.entries) == ["src", "src/pkg", "src/pkg/mod.py"]


def test_ignore_file_patterns_prune_and_reinclude(tmp_path):
    # (was the Dockerfile frontend's own walk over its copy of the matcher)
    for p in ["a.md", "README.md", "src/main.go", "src/x/y.go", "src/x/y.c", "node_modules/m/i.js",
              "docs/keep.md", "docs/drop.md", "docs/sub/z.md"]:
        f = tmp_path / p
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("x")
    seen = set(scan_context(tmp_path, exclude=("*.md", "!README.md", "node_modules", "src/**/*.c", "docs",
                                               "!docs/keep.md")).entries)
    assert not any(s == "node_modules" or s.startswith("node_modules/") for s in seen)
    assert "docs/keep.md" in seen and "docs/drop.md" not in seen and "docs/sub/z.md" not in seen
    assert {"README.md", "src", "src/main.go", "src/x", "src/x/y.go"} <= seen
    assert "src/x/y.c" not in seen and "a.md" not in seen


def test_excluded_dir_kept_only_for_reincluded_content(ctx):
    scan = scan_context(ctx, exclude=("src", "!src/pkg/mod.py"))
    assert sorted(k for k in scan.entries if k.startswith("src")) == ["src", "src/pkg", "src/pkg/mod.py"]
    scan = scan_context(ctx, exclude=("src", "!src/none.py"))
    assert not any(k.startswith("src") for k in scan.entries)


# ---------------------------------------------------------------------------------------------- stat cache


def test_stat_cache_hit_path_reads_nothing(ctx, tmp_path, monkeypatch):
    old(ctx)
    with StatCache(tmp_path / "cache.db") as cache:
        first = scan_context(ctx, stat_cache=cache)
        assert first.stats == {"hashed": 5, "reused": 0}

        def boom(path):
            raise AssertionError(f"read {path}")

        monkeypatch.setattr(context_mod, "hash_file", boom)
        again = scan_context(ctx, stat_cache=cache)
        assert again.identity == first.identity and again.stats == {"hashed": 0, "reused": 5}
    # persistent: a new cache object on the same database file still hits (hash_file still explodes)
    with StatCache(tmp_path / "cache.db") as cache:
        assert scan_context(ctx, stat_cache=cache).stats["hashed"] == 0


def test_stat_cache_rehashes_changed_files(ctx, tmp_path):
    old(ctx)
    with StatCache(tmp_path / "cache.db") as cache:
        first = scan_context(ctx, stat_cache=cache)
        (ctx / "top.txt").write_text("TOP\n")  # same size
        mt = time.time() - 100
        os.utime(ctx / "top.txt", (mt, mt))  # even with the old mtime put back, ctime tells
        second = scan_context(ctx, stat_cache=cache)
        assert second.stats["hashed"] == 1 and second.identity != first.identity
        assert second.entries["top.txt"].digest != first.entries["top.txt"].digest


def test_racy_entries_are_not_remembered(ctx, tmp_path, monkeypatch):
    old(ctx)
    with StatCache(tmp_path / "cache.db") as cache:
        assert scan_context(ctx, stat_cache=cache).stats["hashed"] == 5
        (ctx / "top.txt").write_text("new\n")
        monkeypatch.setattr(context_mod, "RACY_WINDOW_NS", 3600 * 10**9)  # "modified now", however slow we are
        assert scan_context(ctx, stat_cache=cache).stats["hashed"] == 1
        assert scan_context(ctx, stat_cache=cache).stats["hashed"] == 1  # racy: not remembered, hashed again
        monkeypatch.setattr(context_mod, "RACY_WINDOW_NS", RACY_NS)
        time.sleep(RACY_NS / 1e9 * 1.5)
        assert scan_context(ctx, stat_cache=cache).stats["hashed"] == 1  # old enough now: remembered
        assert scan_context(ctx, stat_cache=cache).stats["hashed"] == 0


def test_stat_cache_keyed_by_root(tmp_path):
    a = make_ctx(tmp_path / "a")
    b = make_ctx(tmp_path / "b")
    (b / "top.txt").write_text("bbb\n")
    old(a)
    old(b)
    with StatCache(tmp_path / "cache.db") as cache:
        sa, sb = scan_context(a, stat_cache=cache), scan_context(b, stat_cache=cache)
        assert sa.identity != sb.identity
        assert scan_context(b, stat_cache=cache).identity == sb.identity


# ---------------------------------------------------------------------------------------------- selection_digest


def test_selection_digest_ignores_unrelated_files(ctx):
    action = CopyAction(src=0, src_path="/src", dest="/app", contents_only=True)
    first = selection_digest(scan_context(ctx), action)
    (ctx / "docs" / "readme.md").write_text("changed\n")
    (ctx / "unrelated").write_text("x")
    assert selection_digest(scan_context(ctx), action) == first
    (ctx / "src" / "pkg" / "mod.py").write_text("x = 2\n")
    assert selection_digest(scan_context(ctx), action) != first


def test_selection_digest_wildcards_and_excludes(ctx):
    action = CopyAction(src=0, src_path="/src/*.py", dest="/app/", allow_wildcard=True)
    first = selection_digest(scan_context(ctx), action)
    (ctx / "src" / "pkg" / "mod.py").write_text("not matched by *.py at the top\n")
    assert selection_digest(scan_context(ctx), action) == first
    (ctx / "src" / "new.py").write_text("new\n")
    assert selection_digest(scan_context(ctx), action) != first
    ex = CopyAction(src=0, src_path="/", dest="/app", contents_only=True, exclude=("docs",))
    d1 = selection_digest(scan_context(ctx), ex)
    (ctx / "docs" / "readme.md").write_text("changed\n")
    assert selection_digest(scan_context(ctx), ex) == d1


def test_selection_digest_errors_like_the_copy(ctx):
    with pytest.raises(FileOpError, match="file not found in build context: missing"):
        selection_digest(scan_context(ctx), CopyAction(src=0, src_path="missing", dest="/"))


def test_selection_digest_of_a_stage_counts_owners(ctx):
    action = CopyAction(src=0, src_path="/src", dest="/app")
    stage = selection_digest(ctx, action)
    os.chown(ctx / "src" / "main.py", 99, 99)
    assert selection_digest(ctx, action) != stage
    assert selection_digest(SourceView.context(ctx), action) == selection_digest(scan_context(ctx), action)


# ---------------------------------------------------------------------------------------------- property


SRC = st.sampled_from(["/", "a", "sub", "sub/", "x", "*", "*.txt", "s*", "*/c.txt", "sub/*", "?", "[ab]",
                       "missing", "../sub", "sub/../a", "sub/./c.txt", "x/./sub"])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=trees(), src=SRC, wildcard=st.booleans(), follow=st.booleans(), contents=st.booleans(),
       parents=st.booleans(), include=PATTERNS, exclude=PATTERNS, ctx_exclude=PATTERNS)
def test_selection_digest_scan_equals_directory(tmp_path_factory, items, src, wildcard, follow, contents, parents,
                                                 include, exclude, ctx_exclude):
    root = tmp_path_factory.mktemp("prop") / "ctx"
    build(root, items)
    include = [p for p in include if not p.startswith("!")]
    action = CopyAction(src=0, src_path=src, dest="/d/", allow_wildcard=wildcard, follow_symlinks=follow,
                        contents_only=contents, parents=parents, include=tuple(include), exclude=tuple(exclude),
                        allow_empty_wildcard=True)

    def digest(source):
        try:
            return selection_digest(source, action)
        except FileOpError as e:
            return ("error", str(e))

    scan = scan_context(root, exclude=ctx_exclude)
    assert isinstance(scan, ContextScan)
    assert digest(scan) == digest(SourceView.context(root, exclude=ctx_exclude))


def test_unreadable_or_missing_context_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(FileOpError, match="is not a directory"):
        scan_context(tmp_path / "nope")
    ctx = make_ctx(tmp_path / "c")

    def denied(path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(context_mod, "hash_file", denied)
    with pytest.raises(FileOpError, match=r"cannot read .* in the local context: Permission denied"):
        scan_context(ctx)


def test_parallel_hashing_of_big_files_gives_the_same_scan(ctx, monkeypatch):
    serial = scan_context(ctx)
    monkeypatch.setattr(context_mod, "BIG_FILE", 1)  # every file "big": hashed on the thread pool
    assert scan_context(ctx) == serial


def test_deeper_than_the_recursion_limit(tmp_path):
    root = tmp_path / "deep"
    root.mkdir()
    fd = cur = os.open(root, os.O_RDONLY)
    for _ in range(1100):
        os.mkdir("d", dir_fd=cur)
        nxt = os.open("d", os.O_RDONLY, dir_fd=cur)
        if cur != fd:
            os.close(cur)
        cur = nxt
    os.close(os.open("f", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=cur))
    os.close(cur)
    os.close(fd)
    try:
        assert len(scan_context(root).entries) == 1101
        assert len(scan_context(root, exclude=("**", "!**/f")).entries) == 1101
        assert scan_context(root, exclude=("**", "!**/g")).entries == {}
    finally:
        remove_chain(root)  # shutil.rmtree (and pytest's cleanup) recurse per level


def remove_chain(root: Path) -> None:
    """Remove a deep d/d/d/.../f chain bottom-up without recursion."""
    fds = [os.open(root, os.O_RDONLY)]
    while True:
        try:
            fds.append(os.open("d", os.O_RDONLY, dir_fd=fds[-1]))
        except FileNotFoundError:
            break
    with contextlib.suppress(FileNotFoundError):
        os.unlink("f", dir_fd=fds[-1])
    for parent, child in zip(reversed(fds[:-1]), reversed(fds[1:])):
        os.close(child)
        os.rmdir("d", dir_fd=parent)
    os.close(fds[0])


def test_stat_cache_forgets_deleted_files(ctx, tmp_path):
    old(ctx)
    with StatCache(tmp_path / "cache.db") as cache:
        scan_context(ctx, exclude=("docs",), stat_cache=cache)
        assert "src/main.py" in cache.load(os.path.realpath(ctx))
        os.unlink(ctx / "src" / "main.py")
        scan_context(ctx, exclude=("docs",), stat_cache=cache)
        assert "src/main.py" not in cache.load(os.path.realpath(ctx))


def test_selection_digest_of_a_directory_counts_xattrs_and_device_numbers(tmp_path):
    # a copy or a mount carries xattrs (a file capability) and a device's number: a stage's selection
    # that differs only there must not hash the same (the cached step would see the old ones)
    root = tmp_path / "stage"
    (root / "out").mkdir(parents=True)
    (root / "out" / "ping").write_bytes(b"\x7fELF")
    action = CopyAction(src=0, src_path="/out", dest="/", follow_symlinks=True)
    plain = selection_digest(root, action)
    os.setxattr(root / "out" / "ping", "user.irctl-test", b"cap")
    tagged = selection_digest(root, action)
    assert tagged != plain
    os.setxattr(root / "out" / "ping", "user.irctl-test", b"other")
    assert selection_digest(root, action) not in (plain, tagged)
    if os.geteuid() == 0:  # (mknod of a device needs root)
        os.mknod(root / "out" / "d", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        null = selection_digest(root, action)
        os.unlink(root / "out" / "d")
        os.mknod(root / "out" / "d", 0o600 | stat.S_IFCHR, os.makedev(1, 5))
        assert selection_digest(root, action) != null
        os.unlink(root / "out" / "d")
        os.mknod(root / "out" / "d", 0o600 | stat.S_IFBLK, os.makedev(1, 3))
        assert selection_digest(root, action) != null


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a device needs root")
def test_context_fifos_and_devices_are_told_apart(tmp_path):
    # a COPY of a context's fifo makes a fifo, of a device that device: swapping one for the other
    # (or for another device number) must change the context and the selection
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    action = CopyAction(src=0, src_path="/n", dest="/")
    seen = set()
    for kind, dev in ((stat.S_IFIFO, 0), (stat.S_IFCHR, os.makedev(1, 3)), (stat.S_IFCHR, os.makedev(1, 5)),
                      (stat.S_IFBLK, os.makedev(1, 5))):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(ctx / "n")
        os.mknod(ctx / "n", 0o600 | kind, dev)
        scan = scan_context(ctx)
        seen.add((scan.identity, selection_digest(scan, action)))
    assert len({i for i, _ in seen}) == 4 and len({d for _, d in seen}) == 4


def test_a_stat_cache_from_before_xattrs_counted_is_not_trusted(tmp_path):
    # a store written by an older irctl holds rows for files whose xattrs it never looked at: their
    # stat still matches, but the digest must be computed again rather than taken from such a row
    import sqlite3

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "server").write_text("bin\n")
    os.setxattr(ctx / "server", "user.irctl-test", b"1")
    db_path = tmp_path / "store" / "stat.db"
    db_path.parent.mkdir()
    old = sqlite3.connect(db_path)
    old.execute("CREATE TABLE stat_cache (root TEXT NOT NULL, rel BLOB NOT NULL, size INTEGER, mtime_ns INTEGER, "
                "ctime_ns INTEGER, ino INTEGER, dev INTEGER, digest TEXT, PRIMARY KEY (root, rel)) WITHOUT ROWID")
    st = os.lstat(ctx / "server")
    plain = context_mod.hash_file(ctx / "server")
    old.execute("INSERT INTO stat_cache VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (os.path.realpath(ctx), b"server", st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino,
                 st.st_dev, plain))
    old.commit()
    old.close()
    with StatCache(db_path) as cache:
        scan = scan_context(ctx, stat_cache=cache)
    assert scan.entries["server"].digest.startswith(plain + ";xattrs=")
