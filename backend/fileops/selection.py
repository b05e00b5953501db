"""What a COPY selects (BuildKit ``solver/llbsolver/file`` + ``fsutil/copy``), from a tree on disk
or a context scan, so that the checksum of a selection and the copy agree:

* ``include``/``exclude`` patterns (dockerignore syntax) apply to paths *inside* each selected
  source, relative to it; an excluded top-level wildcard match is skipped too (``COPY --exclude``);
  directories that only lead to included paths are created on demand;
* ``parents`` (``COPY --parents``) copies the contents of the ``/./`` pivot (else the root) with the
  rest of the path as an include pattern, so the source's directory structure is kept.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass

from backend.fileops.copy import FileOpError, Node
from backend.fileops.treepaths import expand_wildcards, has_wildcards, resolve, unescape
from ir.patterns import Matcher, PatternError


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
