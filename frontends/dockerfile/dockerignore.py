"""``.dockerignore``: which files of the build context are left out, as BuildKit decides.

Semantics of ``moby/patternmatcher`` and its ``ignorefile`` reader:

* a line starting with ``#`` is a comment; lines are trimmed; empty lines are skipped; a leading
  ``!`` makes an *exception* (re-include); patterns are cleaned like ``filepath.Clean`` and a
  leading ``/`` is dropped (``/a/../b/`` → ``b``);
* ``*`` and ``?`` do not cross ``/``; ``**`` crosses any number of directories (``**/x`` also
  matches ``x``); ``[...]`` is a character class; ``\\`` escapes the next character;
* a pattern excludes a path when it matches the path *or any of its parent directories*;
* patterns are applied in order and the last one that matches wins.

:class:`Matcher` answers :meth:`Matcher.excluded` quickly during a walk: the patterns that match a
directory or one of its ancestors are remembered per directory, so a file costs one regular
expression per pattern.  :meth:`Matcher.can_prune` tells whether an excluded directory can be
skipped whole (no exception pattern can match anything below it).

:func:`find_ignore_file` picks the file BuildKit reads: ``<Dockerfile name>.dockerignore`` beside
the Dockerfile, else ``.dockerignore`` at the root of the context.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from frontends.errors import FrontendError

_REGEX_SPECIAL = set(".+()|{}$")


class IgnoreError(FrontendError, ValueError):
    """An invalid pattern (``!`` alone, a bad character class)."""


def go_clean(path: str) -> str:
    """``filepath.Clean`` for slash paths (``posixpath.normpath`` keeps a leading ``//``)."""
    if path == "":
        return "."
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def read_patterns(text: str) -> list[str]:
    """The patterns of a ``.dockerignore`` file's text (``ignorefile.ReadAll``)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    out = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = go_clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        out.append("!" + pattern if invert else pattern)
    return out


def _compile(pattern: str) -> "re.Pattern[str]":
    if pattern.startswith("**") and not any(c in pattern[2:] for c in "*?[]\\"):
        # patternmatcher's "suffix match": ``**x`` matches any path ending in x, ``**/x`` also x
        suffix = pattern[2:]
        alt = f"|{re.escape(suffix[1:])}" if suffix.startswith("/") else ""
        return re.compile(f"(?:.*{re.escape(suffix)}{alt})\\Z", re.S)
    rx = ["^"]
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            if i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":
                    i += 1
                rx.append(".*" if i >= n else "(.*/)?")
            else:
                rx.append("[^/]*")
        elif ch == "?":
            rx.append("[^/]")
        elif ch in _REGEX_SPECIAL:
            rx.append("\\" + ch)
        elif ch == "\\":
            if i < n:
                rx.append(re.escape(pattern[i]))
                i += 1
            else:
                rx.append("\\\\")
        elif ch == "[":
            # a character class, copied through; characters Python would read as nested sets or
            # set operations are escaped (Go's regexp has neither)
            j = i + (1 if pattern[i : i + 1] == "^" else 0)
            j += 1 if pattern[j : j + 1] == "]" else 0
            end = pattern.find("]", j)
            if end < 0:
                raise IgnoreError(f"invalid pattern {pattern!r}: missing closing ]")
            body = pattern[i:end]
            rx.append("[" + "".join("\\" + c if c in "[&~|" else c for c in body) + "]")
            i = end + 1
        elif ch == "]":
            rx.append("\\]")
        else:
            rx.append(re.escape(ch) if ch in "^" else ch)
    rx.append("\\Z")
    try:
        return re.compile("".join(rx), re.S)
    except re.error as e:
        raise IgnoreError(f"invalid pattern {pattern!r}: {e}") from None


@dataclass(frozen=True)
class Pattern:
    text: str  # cleaned, without "!"
    exclusion: bool  # True for "!pattern" (an exception that re-includes)
    regex: "re.Pattern[str]"
    segments: tuple[str, ...]

    def matches(self, path: str) -> bool:
        return self.regex.match(path) is not None

    def may_match_below(self, dir_parts: tuple[str, ...]) -> bool:
        """Could this pattern match some path strictly inside the directory ``dir_parts``?"""
        segs = self.segments
        if "[" in self.text:
            return True  # a class may match "/": be conservative
        for i, part in enumerate(dir_parts):
            if i >= len(segs):
                return False
            seg = segs[i]
            if "**" in seg:
                return True
            if not _compile(seg).match(part):
                return False
        return len(segs) > len(dir_parts)


class Matcher:
    """Compiled ignore patterns.  ``excluded("a/b.txt")`` → True when the path is left out."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns: list[Pattern] = []
        for raw in patterns:
            p = raw.strip()
            if not p:
                continue
            exclusion = p.startswith("!")
            if exclusion:
                p = p[1:]
                if not p:
                    raise IgnoreError('illegal exclusion pattern: "!"')
            p = go_clean(p)
            self.patterns.append(Pattern(p, exclusion, _compile(p), tuple(p.split("/"))))
        self.has_exclusions = any(p.exclusion for p in self.patterns)
        self._dir_masks: dict[str, int] = {"": 0, ".": 0}

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Matcher":
        return cls(read_patterns(Path(path).read_text(encoding="utf-8")))

    def _own_mask(self, path: str) -> int:
        mask = 0
        for i, p in enumerate(self.patterns):
            if p.regex.match(path):
                mask |= 1 << i
        return mask

    def _ancestor_mask(self, dirpath: str) -> int:
        """Patterns matching ``dirpath`` or any of its ancestors (memoised per directory)."""
        cached = self._dir_masks.get(dirpath)
        if cached is not None:
            return cached
        parent = posixpath.dirname(dirpath)
        mask = self._ancestor_mask(parent) | self._own_mask(dirpath)
        if len(self._dir_masks) > 100_000:
            self._dir_masks.clear()
            self._dir_masks.update({"": 0, ".": 0})
        self._dir_masks[dirpath] = mask
        return mask

    def excluded(self, relpath: str, is_dir: bool = False) -> bool:
        """Is ``relpath`` (slash-separated, relative to the context root) excluded?"""
        path = go_clean(relpath.replace(os.sep, "/"))
        if path == "/":
            return self._decide(self._own_mask(path))  # the root: only "**"-like patterns match
        path = path.lstrip("/")
        if path in ("", "."):
            return False
        if is_dir:
            mask = self._ancestor_mask(path)
        else:
            mask = self._ancestor_mask(posixpath.dirname(path)) | self._own_mask(path)
        return self._decide(mask)

    def _decide(self, mask: int) -> bool:
        """Apply the patterns in order to a path matched (itself or a parent) by ``mask``."""
        matched = False
        for i, p in enumerate(self.patterns):
            if p.exclusion != matched:
                continue
            if mask >> i & 1:
                matched = not p.exclusion
        return matched

    def can_prune(self, reldir: str) -> bool:
        """True when ``reldir`` is excluded and nothing below it can be re-included."""
        if not self.excluded(reldir, is_dir=True):
            return False
        if not self.has_exclusions:
            return True
        parts = tuple(go_clean(reldir).strip("/").split("/"))
        return not any(p.exclusion and p.may_match_below(parts) for p in self.patterns)

    def walk(self, root: str | os.PathLike) -> Iterator[str]:
        """Yield the relative paths (files, links and directories) that are *not* excluded,
        pruning excluded directories whenever no exception can reach inside them."""
        root = os.fspath(root)
        stack = [""]
        while stack:
            rel = stack.pop()
            try:
                entries = sorted(os.scandir(os.path.join(root, rel) if rel else root), key=lambda e: e.name)
            except (FileNotFoundError, NotADirectoryError):
                continue
            subdirs = []
            for entry in entries:
                path = f"{rel}/{entry.name}" if rel else entry.name
                is_dir = entry.is_dir(follow_symlinks=False)
                if is_dir:
                    if self.can_prune(path):
                        continue
                    if not self.excluded(path, True):
                        yield path
                    subdirs.append(path)
                elif not self.excluded(path):
                    yield path
            stack.extend(reversed(subdirs))


def find_ignore_file(context_dir: str | os.PathLike, dockerfile: str | os.PathLike | None = None) -> Path | None:
    """The ignore file BuildKit reads for this build, or None.

    ``<dockerfile>.dockerignore`` next to the Dockerfile wins (``build/app.Dockerfile`` →
    ``build/app.Dockerfile.dockerignore``); otherwise ``.dockerignore`` in the context root."""
    if dockerfile is not None:
        df = Path(dockerfile)
        specific = df.with_name(df.name + ".dockerignore")
        if specific.is_file():
            return specific
    generic = Path(context_dir) / ".dockerignore"
    return generic if generic.is_file() else None


def load_matcher(context_dir: str | os.PathLike, dockerfile: str | os.PathLike | None = None) -> Matcher:
    """The :class:`Matcher` for a build (an empty one when there is no ignore file)."""
    path = find_ignore_file(context_dir, dockerfile)
    return Matcher.from_file(path) if path else Matcher([])
