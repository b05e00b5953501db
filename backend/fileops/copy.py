"""What a COPY reads from: the source views (a stage's rootfs, a filtered local context), the
directory tree over one (``DirTree``), and the hashing of a file's contents every checksum uses.

The same selection code (``backend.fileops.selection``) walks a ``DirTree`` or a context scan already in
memory (``backend.fileops.context.ScanTree``), so the content checksum of a selection and the bytes the
copy writes cannot disagree; ``backend.fileops.treepaths`` resolves paths and expands wildcards in either.
"""

from __future__ import annotations

import hashlib
import posixpath
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from backend.errors import SolveError
from ir.patterns import Matcher, PatternError


class FileOpError(SolveError):
    """A file action failed; ``str()`` is the message for the user (paths as the user wrote them)."""

    def __init__(self, message: str, path: str = "") -> None:
        self.message = message
        self.path = path
        super().__init__(message)


@dataclass(frozen=True)
class SourceView:
    """A readable directory a copy reads from.

    ``include``/``exclude`` are the local source's dockerignore-style filters (paths they hide do not
    exist for the copy); ``reset_owner`` makes copied files 0:0 unless the copy sets an owner (a local
    context: the host's owners never reach the image); ``label`` names the source in errors."""

    root: Path
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    reset_owner: bool = False
    label: str = ""

    @classmethod
    def context(cls, root: Path, include=(), exclude=()) -> "SourceView":
        return cls(Path(root), tuple(include), tuple(exclude), reset_owner=True, label="build context")

    def describe(self) -> str:
        return self.label or ("build context" if self.reset_owner else "source")


# ---------------------------------------------------------------------------------------------- trees


class Node(NamedTuple):
    """One entry of a tree.  ``kind``: ``dir``, ``file``, ``symlink`` or ``other`` (device, fifo)."""

    kind: str
    mode: int  # full st_mode (type and permission bits)
    size: int = 0
    target: str = ""  # symlink target
    uid: int = 0
    gid: int = 0
    st: os.stat_result | None = None  # the lstat it came from (directory trees only)


def node_from_stat(st: os.stat_result) -> Node:
    m = st.st_mode
    if stat.S_ISDIR(m):
        kind = "dir"
    elif stat.S_ISREG(m):
        kind = "file"
    elif stat.S_ISLNK(m):
        kind = "symlink"
    else:
        kind = "other"
    return Node(kind, m, st.st_size if kind == "file" else 0, "", st.st_uid, st.st_gid, st)


class DirTree:
    """A directory on disk seen through a :class:`SourceView`'s include/exclude filters."""

    def __init__(self, view: SourceView | Path | str) -> None:
        if not isinstance(view, SourceView):
            view = SourceView(Path(view))
        self.view = view
        self.root = os.fspath(view.root)
        try:
            self.include = Matcher(view.include)
            self.exclude = Matcher(view.exclude)
        except PatternError as e:
            raise FileOpError(f"invalid pattern in the filters of {view.describe()}: {e}") from None
        self.filtered = bool(self.include or self.exclude)
        self._visible: dict[str, bool] = {}

    def host(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def _raw_lstat(self, rel: str) -> os.stat_result | None:
        try:
            return os.lstat(self.host(rel))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def lstat(self, rel: str) -> Node | None:
        st = self._raw_lstat(rel)
        if st is None:
            return None
        node = node_from_stat(st)
        if rel and self.filtered and not self.visible(rel, node.kind == "dir"):
            return None
        if node.kind == "symlink":
            node = Node("symlink", st.st_mode, 0, os.readlink(self.host(rel)), st.st_uid, st.st_gid, st)
        return node

    def _direct(self, rel: str, is_dir: bool) -> bool | None:
        """The filters' verdict on ``rel`` alone; None for a directory kept only if something below
        it is visible (excluded or not included itself, but an exception or include may reach inside)."""
        inc, exc = self.include, self.exclude
        inc_ok = not inc or inc.matches(rel)
        exc_hit = bool(exc) and exc.matches(rel)
        if inc_ok and not exc_hit:
            return True
        if not is_dir:
            return False
        if not (inc_ok or inc.may_match_under(rel)) or (exc_hit and not exc.may_unmatch_under(rel)):
            return False
        return None

    def visible(self, rel: str, is_dir: bool) -> bool:
        """Does the filtered source hold ``rel``?  (Its parents are assumed visible.)"""
        verdict = self._direct(rel, is_dir)
        if verdict is not None:
            return verdict
        known = self._visible.get(rel)
        return known if known is not None else self._has_visible_below(rel)

    def _has_visible_below(self, rel: str) -> bool:
        """Search below ``rel`` (iteratively: trees may nest deeper than the recursion limit)."""
        explored: list[str] = []
        stack = [rel]
        while stack:
            d = stack.pop()
            explored.append(d)
            for name, is_dir in self._entries(d):
                child = f"{d}/{name}"
                verdict = self._direct(child, is_dir)
                if verdict is None:
                    verdict = self._visible.get(child)
                if verdict:
                    while True:  # everything from rel down to d leads to a visible entry
                        self._visible[d] = True
                        if d == rel:
                            return True
                        d = posixpath.dirname(d)
                if verdict is None:
                    stack.append(child)
        for d in explored:
            self._visible[d] = False
        return False

    def _entries(self, rel: str) -> list[tuple[str, bool]]:
        try:
            with os.scandir(self.host(rel)) as it:
                entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        except (FileNotFoundError, NotADirectoryError):
            return []
        entries.sort()
        return entries

    def listdir(self, rel: str) -> list[str]:
        entries = self._entries(rel)
        if not self.filtered:
            return [name for name, _ in entries]
        return [name for name, is_dir in entries if self.visible(f"{rel}/{name}" if rel else name, is_dir)]

    def file_digest(self, rel: str, node: Node) -> str:
        return hash_file(self.host(rel))


def hash_file(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` of a regular file's contents (never following a final symlink)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        h = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):  # (file_digest zeroes a fresh 256 KiB buffer per file)
            h.update(chunk)
        return "sha256:" + h.hexdigest()
    finally:
        os.close(fd)
