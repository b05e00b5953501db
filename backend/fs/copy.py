"""What a COPY reads: source trees, wildcard expansion, and the filtered walk of a selection.

The same code decides what a copy selects whether the source is a directory on disk
(:class:`DirTree`: a stage's merged rootfs, or a local context filtered by its dockerignore
patterns) or a context scan already in memory (``backend.fs.context.ScanTree``), so the content
checksum of a selection (``selection_digest``) and the bytes the copy writes cannot disagree.

Rules (BuildKit ``solver/llbsolver/file`` + ``fsutil/copy``):

* a path is resolved inside its source as chroot(2) would: ``..`` stops at the root, an absolute
  symlink restarts at the root; the final component is followed only with ``follow_symlinks``;
* wildcards (``*``, ``?``, ``[...]``, per path component, Go ``filepath.Match``) are expanded from
  the first component holding one; a matched directory is not descended into;
* ``include``/``exclude`` patterns (dockerignore syntax) apply to paths *inside* each selected
  source, relative to it; an excluded top-level wildcard match is skipped too (``COPY --exclude``);
  directories that only lead to included paths are created on demand;
* ``parents`` (``COPY --parents``) copies the contents of the ``/./`` pivot (else the root) with the
  rest of the path as an include pattern, so the source's directory structure is kept.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from backend.errors import SolveError
from ir.patterns import Matcher, PatternError

MAX_SYMLINKS = 40
WILDCARD_CHARS = "*?["


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
        from backend.fs.context import hash_file  # the one hashing function (monkeypatchable in tests)

        return hash_file(self.host(rel))


# ---------------------------------------------------------------------------------------------- paths


def resolve(tree, path: str, *, follow_final: bool = True) -> str:
    """``path`` resolved inside the tree as chroot(2) would ('' is the root).  Missing components are
    kept as written; symlinks (at most 40) never lead outside."""
    pending = [c for c in path.split("/") if c and c != "."]
    pending.reverse()
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop()
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = "/".join([*resolved, part])
        node = tree.lstat(candidate)
        if node is not None and node.kind == "symlink" and (pending or follow_final):
            links += 1
            if links > MAX_SYMLINKS:
                raise FileOpError(f"too many levels of symbolic links: {path}", path)
            if node.target.startswith("/"):
                resolved = []
            pending.extend(reversed([c for c in node.target.split("/") if c and c != "."]))
            continue
        resolved.append(part)
    return "/".join(resolved)


def has_wildcards(text: str) -> bool:
    i = 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] in WILDCARD_CHARS:
            return True
        i += 1
    return False


def component_regex(seg: str, whole: str):
    """Go ``filepath.Match`` for one path component, as a regular expression."""
    rx, i, n = [], 0, len(seg)
    while i < n:
        ch = seg[i]
        i += 1
        if ch == "*":
            rx.append("[^/]*")
        elif ch == "?":
            rx.append("[^/]")
        elif ch == "\\":
            if i >= n:
                raise FileOpError(f"invalid wildcard pattern {whole!r}", whole)
            rx.append(re.escape(seg[i]))
            i += 1
        elif ch == "[":
            j, cls = i, ["["]
            if j < n and seg[j] == "^":
                cls.append("^")
                j += 1
            count = 0
            while True:
                if j >= n:
                    raise FileOpError(f"invalid wildcard pattern {whole!r}", whole)
                c = seg[j]
                if c == "]" and count:
                    j += 1
                    break
                if c in "-]":
                    raise FileOpError(f"invalid wildcard pattern {whole!r}", whole)
                if c == "\\":
                    j += 1
                    if j >= n:
                        raise FileOpError(f"invalid wildcard pattern {whole!r}", whole)
                    c = seg[j]
                cls.append(re.escape(c))
                j += 1
                if j < n and seg[j] == "-":
                    j += 1
                    if j >= n or seg[j] in "-]":
                        raise FileOpError(f"invalid wildcard pattern {whole!r}", whole)
                    if seg[j] == "\\":
                        j += 1
                        if j >= n:
                            raise FileOpError(f"invalid wildcard pattern {whole!r}", whole)
                    cls.append("-" + re.escape(seg[j]))
                    j += 1
                count += 1
            if cls[1:2] == ["^"]:
                cls.append("/")  # a negated class never matches the separator
            cls.append("]")
            rx.append("".join(cls))
            i = j
        else:
            rx.append(re.escape(ch))
    from ir.patterns import Linear

    return Linear(re.compile("".join(rx) + r"\Z", re.S))  # many stars: linear, not re's backtracking


def unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def expand_wildcards(tree, pattern: str, *, follow_final: bool) -> list[str]:
    """The paths (relative, unresolved below the fixed prefix) matching ``pattern``, in walk order.

    The components before the first wildcard are resolved (the last one followed only with
    ``follow_final``); a matched directory is not descended into, as ``filepath.Walk`` + ``SkipDir``."""
    parts = [c for c in pattern.split("/") if c and c != "."]
    k = next((i for i, c in enumerate(parts) if has_wildcards(c)), len(parts))
    base = resolve(tree, "/".join(parts[:k]), follow_final=follow_final)
    regs = [component_regex(c, pattern) for c in parts[k:]]
    if not regs:
        return [base]
    base_node = tree.lstat(base)
    if base_node is None or base_node.kind != "dir":
        return []
    out: list[str] = []

    def walk(rel: str, depth: int) -> None:
        for name in tree.listdir(rel):
            child = f"{rel}/{name}" if rel else name
            if not regs[depth].match(name):
                continue
            if depth == len(regs) - 1:
                out.append(child)
                continue
            node = tree.lstat(child)
            if node is not None and node.kind == "dir":
                walk(child, depth + 1)

    walk(base, 0)
    return out


# ---------------------------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class Selected:
    """One top-level source of a copy: ``name`` as matched (its basename names the copy in a
    directory dest), ``rel`` resolved in the source tree, ``node`` what is there."""

    name: str
    rel: str
    node: Node
    wildcard_rel: str = ""  # path relative to the wildcard base, for top-level --exclude


@dataclass(frozen=True)
class CopyPlan:
    selections: tuple[Selected, ...]
    include: Matcher
    exclude: Matcher
    contents_only: bool
    wildcard: bool  # the source is a pattern (several matches onto a non-directory dest replace one another)


def _not_found(tree, src_path: str) -> FileOpError:
    view = getattr(tree, "view", None)
    label = view.describe() if view is not None else "build context"
    return FileOpError(f"file not found in {label}: {src_path}", src_path)


def plan_copy(tree, action) -> CopyPlan:
    """What ``action`` (an ``ir.ops.CopyAction``) reads from ``tree``; raises FileOpError when the
    named source does not exist (or a wildcard matches nothing, unless that is allowed)."""
    try:
        include = Matcher(action.include)
        exclude = Matcher(action.exclude)
    except PatternError as e:
        raise FileOpError(f"invalid pattern: {e}") from None
    src_path = action.src_path
    if action.parents:
        pivot, sep, rest = src_path.partition("/./")
        if not sep:
            pivot, rest = "/", src_path
        rest = posixpath.normpath("/" + rest).lstrip("/")
        pattern = rest if action.allow_wildcard else re.sub(r"([*?\[\]\\])", r"\\\1", rest)
        rel = resolve(tree, pivot)
        node = tree.lstat(rel)
        if node is None or node.kind != "dir":
            raise _not_found(tree, src_path)
        try:  # (the Dockerfile has no --include, so a parents copy never carries its own includes)
            include = Matcher([pattern])
        except PatternError as e:
            raise FileOpError(f"invalid pattern: {e}") from None
        wildcard = has_wildcards(rest) and action.allow_wildcard
        if not wildcard and tree.lstat(resolve(tree, f"{rel}/{unescape(pattern)}", follow_final=False)) is None:
            raise _not_found(tree, src_path)
        sel = Selected(pivot, rel, node)
        if wildcard and not action.allow_empty_wildcard and \
                not any(item.comps for item in walk_selection(tree, sel, include, Matcher(()))):
            raise _not_found(tree, src_path)
        return CopyPlan((sel,), include, exclude, True, True)

    wildcard = action.allow_wildcard and has_wildcards(src_path)
    if wildcard:
        names = expand_wildcards(tree, src_path, follow_final=action.follow_symlinks)
        parts = [c for c in src_path.split("/") if c and c != "."]
        k = next(i for i, c in enumerate(parts) if has_wildcards(c))
        if not names:
            if action.allow_empty_wildcard:
                return CopyPlan((), include, exclude, action.contents_only, True)
            raise _not_found(tree, src_path)
        base = resolve(tree, "/".join(parts[:k]), follow_final=action.follow_symlinks)
    else:
        names = [src_path]
        base = ""
    selections = []
    for name in names:
        rel = resolve(tree, name, follow_final=action.follow_symlinks)
        node = tree.lstat(rel)
        if node is None:
            raise _not_found(tree, src_path)
        wrel = name[len(base):].lstrip("/") if wildcard and name.startswith(base) else ""
        if wildcard and exclude and wrel and exclude.matches(wrel):
            continue
        display = name if wildcard else posixpath.normpath("/" + src_path)
        selections.append(Selected(display, rel, node, wrel))
    return CopyPlan(tuple(selections), include, exclude, action.contents_only, wildcard)


@dataclass(frozen=True)
class Item:
    """One entry of a selection walk.  ``comps`` is relative to the selected source ('' = itself);
    ``implied`` marks a directory present only to hold included entries below it."""

    comps: str
    rel: str
    node: Node
    implied: bool = False


class _Tentative:
    __slots__ = ("item", "parent", "emitted")

    def __init__(self, item: Item, parent: "_Tentative | None") -> None:
        self.item, self.parent, self.emitted = item, parent, False


def walk_selection(tree, sel: Selected, include: Matcher, exclude: Matcher) -> Iterator[Item]:
    """The entries a copy of ``sel`` writes, parents before children, names sorted per directory."""
    yield Item("", sel.rel, sel.node)
    if sel.node.kind != "dir":
        return
    # frames: (rel, comps, include_all, tentative ancestor chain)
    stack: list[tuple[str, str, bool, _Tentative | None]] = [(sel.rel, "", not include, None)]
    while stack:
        rel, comps, inc_all, tent = stack.pop()
        subdirs = []
        for name in tree.listdir(rel):
            crel = f"{rel}/{name}" if rel else name
            ccomps = f"{comps}/{name}" if comps else name
            node = tree.lstat(crel)
            if node is None:
                continue
            is_dir = node.kind == "dir"
            included = inc_all or include.matches(ccomps)
            excluded = bool(exclude) and exclude.matches(ccomps)
            if included and not excluded:
                yield from _flush(tent)
                yield Item(ccomps, crel, node)
                if is_dir:  # below an included dir everything matches, unless an exception may flip it
                    subdirs.append((crel, ccomps, inc_all or not include.has_exclusions, None))
            elif is_dir:
                if not included and not include.may_match_under(ccomps):
                    continue
                if excluded and not exclude.may_unmatch_under(ccomps):
                    continue
                subdirs.append((crel, ccomps, inc_all, _Tentative(Item(ccomps, crel, node, True), tent)))
        stack.extend(reversed(subdirs))


def _flush(tent: _Tentative | None) -> Iterator[Item]:
    chain = []
    while tent is not None and not tent.emitted:
        chain.append(tent)
        tent = tent.parent
    for t in reversed(chain):
        t.emitted = True
        yield t.item
