"""Paths inside a source tree: resolved as chroot(2) would, and wildcards expanded (BuildKit
``solver/llbsolver/file`` + ``fsutil/copy``):

* ``..`` stops at the root, an absolute symlink restarts at the root; the final component is
  followed only with ``follow_symlinks``;
* wildcards (``*``, ``?``, ``[...]``, per path component, Go ``filepath.Match``) are expanded from
  the first component holding one; a matched directory is not descended into.

A tree is anything with ``lstat``/``readlink``/``listdir`` over relative paths: a ``DirTree`` on
disk or a context scan in memory.
"""

from __future__ import annotations

import re

from backend.fileops.copy import FileOpError
from ir.patterns import Linear

MAX_SYMLINKS = 40
WILDCARD_CHARS = "*?["


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
