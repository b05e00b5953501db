"""Local build contexts: a content identity for the whole context and for what one COPY selects.

``scan_context`` walks a context directory through its include/exclude patterns (pruning excluded
directories no exception can reach into) and returns every visible entry with its type, permission
bits, size and content digest (or symlink target).  The scan's ``identity`` hashes exactly that
(and the root's permission bits), sorted: mtimes, owners (they never reach the image: context files are copied as 0:0) and the order
of the walk do not count.

``StatCache`` makes re-scans cheap: an sqlite table keyed by (context root, path) remembers the
digest of each file with the stat it was computed from (size, mtime_ns, ctime_ns, inode, device);
a file whose stat is unchanged is not read again.  As in git, a file whose mtime or ctime falls
within ``RACY_WINDOW_NS`` of the scan is *racy* (a later write in the same timestamp tick could leave
the stat unchanged): it is hashed but not remembered, so the next scan hashes it again.  The digest
is remembered with the stat taken *before* reading, and only if the file did not change meanwhile.

``selection_digest(scan_or_dir, action)`` is the checksum of exactly what a ``CopyAction`` selects
(its wildcard, include/exclude, symlink following, the subtree of a named directory), computed by
the same selection code the copy uses (``backend/fileops/selection.py``), from a scan (no I/O) or a directory
(a stage's rootfs, hashed on the fly; there owners count, since a stage's owners are copied).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from backend.fs import safefs
from backend.fileops.copy import DirTree, FileOpError, Node, SourceView, hash_file
from backend.fs.layerformat import OVERLAY_XATTR_PREFIXES
from backend.fileops.selection import plan_copy, walk_selection

RACY_WINDOW_NS = 1_000_000_000  # a whole second: also covers filesystems with 1 s timestamps
BIG_FILE = 1 << 20  # files this large are hashed in parallel (small ones are faster serially)
_TYPES = {"dir": stat.S_IFDIR, "file": stat.S_IFREG, "symlink": stat.S_IFLNK, "other": 0}


class Entry(NamedTuple):
    """One visible path of a context: ``type`` is ``file``, ``dir``, ``symlink`` or ``other``."""

    type: str
    mode: int  # permission bits, 0o7777
    size: int = 0
    digest: str = ""  # "sha256:…" of a file's contents
    target: str = ""  # a symlink's target; for ``other``, its file type and device number


@dataclass(frozen=True)
class ContextScan:
    root: Path
    identity: str  # "sha256:…"
    entries: dict[str, Entry]  # relative path → entry (the root itself is not an entry)
    root_mode: int = 0o755
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    stats: dict[str, int] = field(default_factory=dict, compare=False)  # hashed / cached counts
    # visible sockets: never content, but a direct bind of the context would hand them to a step
    sockets: tuple[str, ...] = field(default=(), compare=False)
    # paths ("" = the root) not owned by this process's uid:gid, which steps see as root (0:0) in a
    # direct bind; any other owner would show through there, where BuildKit shows 0:0
    foreign_owners: tuple[str, ...] = field(default=(), compare=False)


# 2: a file's digest carries its xattrs (``_xattr_tag``); rows written before did not look at them
STAT_CACHE_VERSION = 2


class StatCache:
    """Persistent (context root, relpath) → (size, mtime_ns, ctime_ns, ino, dev, digest), in sqlite."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        safefs.private_dir(self.path.parent)
        self.db = sqlite3.connect(os.fspath(self.path), timeout=30, isolation_level=None)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:  # another process is switching it right now (SQLite does not
            pass  # wait for that lock); WAL is persistent, as in BlobStore and CacheStore
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS stat_cache (root TEXT NOT NULL, rel BLOB NOT NULL, "
                        "size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, ino INTEGER, dev INTEGER, "
                        "digest TEXT, PRIMARY KEY (root, rel)) WITHOUT ROWID")
        self.db.execute("CREATE TABLE IF NOT EXISTS stat_cache_meta (k TEXT PRIMARY KEY, v INTEGER)")
        row = self.db.execute("SELECT v FROM stat_cache_meta WHERE k = 'version'").fetchone()
        if row is None or row[0] != STAT_CACHE_VERSION:  # rows of another format: hashed again once
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.execute("DELETE FROM stat_cache")
                self.db.execute("INSERT OR REPLACE INTO stat_cache_meta VALUES ('version', ?)", (STAT_CACHE_VERSION,))

    def load(self, root: str) -> dict[str, tuple]:
        rows = self.db.execute("SELECT rel, size, mtime_ns, ctime_ns, ino, dev, digest FROM stat_cache "
                               "WHERE root = ?", (root,))
        return {r[0].decode("utf-8", "surrogateescape"): r[1:] for r in rows}

    def update(self, root: str, put: dict[str, tuple], drop: list[str]) -> None:
        if not put and not drop:
            return
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            if drop:
                self.db.executemany("DELETE FROM stat_cache WHERE root = ? AND rel = ?",
                                    [(root, _enc(r)) for r in drop])
            self.db.executemany("INSERT OR REPLACE INTO stat_cache VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                [(root, _enc(rel), *v) for rel, v in put.items()])

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "StatCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _enc(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def _stat_key(st: os.stat_result) -> tuple:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def scan_context(root: Path, include=(), exclude=(), *, stat_cache: StatCache | None = None) -> ContextScan:
    """Walk the context ``root`` through the patterns; hash what is visible (see the module doc)."""
    root_s = os.path.realpath(os.fspath(root))
    if not os.path.isdir(root_s):
        raise FileOpError(f"local context {os.fspath(root)} is not a directory", os.fspath(root))
    tree = DirTree(SourceView.context(Path(root_s), tuple(include), tuple(exclude)))
    cached = stat_cache.load(root_s) if stat_cache is not None else {}
    put: dict[str, tuple] = {}
    racy_after = time.time_ns() - RACY_WINDOW_NS
    entries: dict[str, Entry] = {}
    todo: list[tuple[str, str, os.stat_result, tuple]] = []  # files to hash after the walk
    sockets: list[str] = []
    foreign: list[str] = []  # entries (and "" for the root) owned by someone else than this process
    me_uid, me_gid = os.geteuid(), os.getegid()
    reused = 0
    filtered = tree.filtered
    stack = [("", root_s)]
    walked: set[str] = set()
    # the per-entry loop is the warm path: locals only, one lstat, one dict lookup
    s_isdir, s_isreg, s_islnk, s_imode = stat.S_ISDIR, stat.S_ISREG, stat.S_ISLNK, stat.S_IMODE
    lookup = cached.get
    while stack:
        rel, host = stack.pop()
        if rel.count("/") >= safefs.MAX_DEPTH:
            raise FileOpError(f"the local context nests deeper than {safefs.MAX_DEPTH} directories at "
                              f"{safefs.short_path(rel)!r}", safefs.short_path(rel))
        walked.add(rel)
        prefix = rel + "/" if rel else ""
        try:
            it = os.scandir(host)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as err:
            raise FileOpError(f"cannot read {safefs.short_path(rel or '.')} in the local context: {err.strerror}",
                              safefs.short_path(rel)) from None
        with it:
            for e in it:
                crel = prefix + e.name
                try:
                    st = e.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed while we walked
                mode = st.st_mode
                if st.st_uid != me_uid or st.st_gid != me_gid:
                    foreign.append(crel)  # (an excluded entry too: over-cautious, never wrong)
                if s_isreg(mode):
                    if filtered and not tree.visible(crel, False):
                        continue
                    key = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
                    row = lookup(crel)
                    if row is not None and row[:5] == key:
                        reused += 1
                        entries[crel] = Entry("file", s_imode(mode), st.st_size, row[5])
                    else:
                        todo.append((crel, e.path, st, key))
                elif s_isdir(mode):
                    if filtered and not tree.visible(crel, True):
                        continue
                    entries[crel] = Entry("dir", s_imode(mode))
                    stack.append((crel, e.path))
                elif filtered and not tree.visible(crel, False):
                    continue
                elif s_islnk(mode):
                    entries[crel] = Entry("symlink", 0o777, 0, "", os.readlink(e.path))
                elif stat.S_ISSOCK(mode):  # sockets are not content, but noted (``ContextScan.sockets``)
                    sockets.append(crel)
                else:  # (a fifo or a device: its type and number in ``target``, so that a swap counts)
                    entries[crel] = Entry("other", s_imode(mode), 0, "",
                                          f"{stat.S_IFMT(mode):o}:{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
    hashed = len(todo)
    big = [t[1] for t in todo if t[2].st_size >= BIG_FILE]
    digests: dict[str, object] = {}
    if len(big) > 1:  # sha256 releases the GIL on large buffers: big files hash on a few threads
        from concurrent.futures import ThreadPoolExecutor  # only for big files; keeps the import cheap

        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            digests.update(zip(big, pool.map(_hash_or_none, big)))
    for crel, path, st, key in todo:
        digest = digests[path] if path in digests else _hash_or_none(path)
        if digest is None:
            continue  # removed while we walked
        if isinstance(digest, OSError):
            raise FileOpError(f"cannot read {crel} in the local context: {digest.strerror}", crel)
        entries[crel] = Entry("file", stat.S_IMODE(st.st_mode), st.st_size, digest)
        if stat_cache is not None and st.st_mtime_ns < racy_after and st.st_ctime_ns < racy_after:
            if _stat_key(os.lstat(path)) == key:  # unchanged while we read it
                put[crel] = (*key, digest)
    if stat_cache is not None:
        # forget files that are gone: all of them after a full scan, those of walked dirs after a filtered one
        drop = [r for r in cached if r not in entries and (not filtered or r.rpartition("/")[0] in walked)]
        stat_cache.update(root_s, put, drop)
    root_st = os.stat(root_s)
    root_mode = stat.S_IMODE(root_st.st_mode)
    if root_st.st_uid != me_uid or root_st.st_gid != me_gid:
        foreign.append("")
    return ContextScan(Path(root_s), _identity(entries, root_mode), entries, root_mode, tuple(include),
                       tuple(exclude), {"hashed": hashed, "reused": reused}, tuple(sockets), tuple(foreign))


def _hash_or_none(path: str):
    try:
        return hash_file(path) + _xattr_tag(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        return e


def _xattr_tag(path: str) -> str:
    """``;xattrs=…`` (a hash of a file's xattrs) appended to its digest, '' when it has none.  A COPY
    carries them (a file capability): BuildKit's context checksum counts them, so a change must
    re-run the copy.  Read only with the contents (setting an xattr changes the ctime, which the
    stat cache compares), so a warm scan costs nothing more."""
    meta = _meta_beyond_stat(path, _NO_NODE)
    return ";xattrs=" + hashlib.sha256(meta).hexdigest()[:32] if meta else ""


def _identity(entries: dict[str, Entry], root_mode: int) -> str:
    lines = [f"irctl.context.v1\0{root_mode:o}\n"]
    for path in sorted(entries):
        e = entries[path]
        lines.append(f"{path}\0{e.type}\0{e.mode:o}\0{e.target}\0{e.digest}\n")
    return "sha256:" + hashlib.sha256("".join(lines).encode("utf-8", "surrogateescape")).hexdigest()


class ScanTree:
    """A :class:`ContextScan` seen as a tree, for the selection code (no I/O at all)."""

    def __init__(self, scan: ContextScan) -> None:
        self.scan = scan
        self.view = SourceView(scan.root, scan.include, scan.exclude, reset_owner=True, label="build context")
        self._children: dict[str, list[str]] | None = None

    def lstat(self, rel: str) -> Node | None:
        if not rel:
            return Node("dir", stat.S_IFDIR | self.scan.root_mode)
        e = self.scan.entries.get(rel)
        if e is None:
            return None
        return Node(e.type, _TYPES[e.type] | e.mode, e.size, e.target)

    def listdir(self, rel: str) -> list[str]:
        if self._children is None:
            children: dict[str, list[str]] = {}
            for path in self.scan.entries:
                parent, _, name = path.rpartition("/")
                children.setdefault(parent, []).append(name)
            for names in children.values():
                names.sort()
            self._children = children
        return self._children.get(rel, [])

    def file_digest(self, rel: str, node: Node) -> str:
        return self.scan.entries[rel].digest

    def host(self, rel: str) -> str:
        return os.path.join(self.scan.root, rel) if rel else os.fspath(self.scan.root)


# overlay's own xattrs (as root and rootless), which the copy leaves behind, and the host's SELinux
# label (not the file's: layers leave it out too), so that keys do not vary with where a view lives
_PRIVATE_XATTRS = (*OVERLAY_XATTR_PREFIXES, "security.selinux")


_NO_NODE = Node("file", stat.S_IFREG)


def _meta_beyond_stat(path: str, node: Node) -> bytes:
    """What a copy or a mount of ``path`` carries besides kind, mode, owner and content: a device's
    type and number, and the xattrs (a file capability, a rootless device placeholder's number).
    Empty for the common entry without either, so such selections hash as they always did."""
    out = b""
    if node.kind == "other" and node.st is not None:
        rdev = node.st.st_rdev
        out += b"\0dev:%o:%d:%d" % (stat.S_IFMT(node.mode), os.major(rdev), os.minor(rdev))
    try:
        names = sorted(n for n in os.listxattr(path, follow_symlinks=False) if not n.startswith(_PRIVATE_XATTRS))
    except OSError:
        return out
    for name in names:
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        out += b"\0xattr:%s=%s" % (os.fsencode(name), value.hex().encode())
    return out


def selection_digest(scan_or_dir: ContextScan | SourceView | Path | str, action,
                     listing: list[tuple[str, str]] | None = None) -> str:
    """``sha256:…`` of exactly what ``action`` (an ``ir.ops.CopyAction``) selects from the source.

    A :class:`ContextScan` is read without I/O; a ``SourceView`` or a directory is walked and hashed
    (owners count unless the view resets them, as a local context does; xattrs and device numbers
    count too).  Raises ``FileOpError``
    when the copy would fail for a missing source.  ``listing`` receives (path in the source, hash of
    its entry) per entry, so a later build can name the files that changed (``backend.solve.explain``)."""
    if isinstance(scan_or_dir, ContextScan):
        tree, owners = ScanTree(scan_or_dir), False
    else:
        view = scan_or_dir if isinstance(scan_or_dir, SourceView) else SourceView(Path(scan_or_dir))
        tree, owners = DirTree(view), not view.reset_owner
    plan = plan_copy(tree, action)
    h = hashlib.sha256()
    h.update(b"irctl.selection.v1\0")
    for sel in plan.selections:
        h.update(b"source\0%s\0%s\n" % (os.fsencode(sel.name), os.fsencode(sel.rel)))
        for item in walk_selection(tree, sel, plan.include, plan.exclude):
            node = item.node
            digest = tree.file_digest(item.rel, node) if node.kind == "file" else ""
            line = b"%s\0%s\0%o\0%s\0%s\0%d" % (os.fsencode(item.comps), node.kind.encode(),
                                                stat.S_IMODE(node.mode), os.fsencode(node.target),
                                                digest.encode(), item.implied)
            if owners:
                line += b"\0%d:%d" % (node.uid, node.gid)
            if not isinstance(tree, ScanTree):
                line += _meta_beyond_stat(tree.host(item.rel), node)
            h.update(line + b"\n")
            if listing is not None:
                listing.append((item.rel, hashlib.sha256(line).hexdigest()[:16]))
    return "sha256:" + h.hexdigest()
