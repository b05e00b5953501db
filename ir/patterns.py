"""Dockerignore path patterns (moby/patternmatcher semantics): the one matcher of the project.

The pattern language is part of the IR contract (``LocalSource.include``/``exclude`` and
``CopyAction.include``/``exclude`` say "dockerignore syntax", ``spec/ir.md``), so it lives here and
both sides use it: the backend filters contexts and copies with it, the Dockerfile frontend asks it
whether ``.dockerignore`` leaves a COPY source out (finding and reading that file stays in
``frontends/dockerfile/dockerignore.py``).  The rules, as BuildKit applies them:

* patterns are trimmed and cleaned like Go's ``filepath.Clean``; a leading ``!`` makes an
  *exception* (it re-includes); a leading ``/`` is dropped; ``!`` alone is an error, and so is a
  malformed character class or a trailing ``\\`` (the check of ``filepath.Match``);
* ``*`` and ``?`` do not cross ``/``; ``**`` crosses any number of directories (``**/x`` also
  matches ``x``; ``dir/**`` is a prefix match); ``[...]`` is a class; ``\\`` escapes;
* a pattern matches a path when it matches the path *or one of its parent directories*
  (``MatchesOrParentMatches``); patterns apply in order and the last one that matches wins.

:class:`Matcher` remembers per directory which patterns match it or a parent, so a file in a walk
costs one test per pattern.  :meth:`Matcher.may_match_under` and :meth:`Matcher.may_unmatch_under`
answer, conservatively, whether anything below a directory could get another verdict, so a walk can
prune whole subtrees.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable

_REGEX_ESCAPE = set(".+()|{}$")


class PatternError(ValueError):
    """A pattern that moby/patternmatcher rejects (``!`` alone, a malformed ``[...]`` class)."""


def clean_path(path: str) -> str:
    """``filepath.Clean`` for slash paths: ``''`` → ``.``, ``a//b/../c/`` → ``a/c``, ``//a`` → ``/a``."""
    if not path:
        return "."
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def _check_syntax(pattern: str) -> None:
    """Reject what Go's ``filepath.Match`` calls ``ErrBadPattern``."""
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= n:
                raise PatternError(f"syntax error in pattern {pattern!r}: trailing backslash")
            i += 2
            continue
        if ch == "[":
            i += 1
            if i < n and pattern[i] == "^":
                i += 1
            ranges = 0
            while True:
                if i < n and pattern[i] == "]" and ranges:
                    i += 1
                    break
                i = _class_char(pattern, i)
                if i < n and pattern[i] == "-":
                    i = _class_char(pattern, i + 1)
                ranges += 1
            continue
        i += 1


def _class_char(pattern: str, i: int) -> int:
    """The index after the class character (or escape) at ``i``."""
    n = len(pattern)
    if i < n and pattern[i] in "-]":
        raise PatternError(f"syntax error in pattern {pattern!r}: bad character class")
    if i < n and pattern[i] == "\\":
        i += 1
    if i >= n:
        raise PatternError(f"syntax error in pattern {pattern!r}: missing closing ]")
    return i + 1


# Python's re backtracks: a pattern with k stars against a name of n characters may cost n**k steps
# (``*a*a*a*a*a*a*a*a*b`` in a hostile .dockerignore against a 60-character name took minutes; Go's
# regexp, which BuildKit uses, is linear).  A pattern with this many unbounded parts is matched by
# simulating its automaton instead (time: path length x pattern length, ~100x the C regex on short
# paths); fewer keep the C regex, at most quadratic in a name (255 bytes) or a path's depth, and
# fast for the common patterns ("*.pyc", "**/*.pyc", "dir/**").
_NFA_FROM = 3


def _atoms(rx: str) -> list[tuple[str, object]] | None:
    """The regex ``compile_pattern`` made, as atoms: ("one", test) one character, ("star", test) any
    run of characters passing test, ("dslash", None) ``(.*/)?``.  None when it has a shape this
    parser does not know (then the regex is used as it is)."""
    if not rx.endswith("\\Z"):
        return None
    body, atoms, i = rx[1 if rx.startswith("^") else 0:-2], [], 0
    while i < len(body):
        if body.startswith("(.*/)?", i):
            atoms.append(("dslash", None))
            i += 6
            continue
        if body.startswith(".*", i):
            atoms.append(("star", _ANY))
            i += 2
            continue
        ch = body[i]
        if ch == "[":
            j = i + 1
            if body.startswith("^", j):
                j += 1
            if body.startswith("]", j):
                j += 1
            while j < len(body) and body[j] != "]":
                j += 2 if body[j] == "\\" else 1
            if j >= len(body):
                return None
            piece, i = body[i:j + 1], j + 1
        elif ch == "\\":
            piece, i = body[i:i + 2], i + 2
        elif ch in "^()|?*+{}.$":  # an anchor or an operator: not a shape made here for the automaton
            return None
        else:
            piece, i = re.escape(ch), i + 1
        try:
            test = re.compile(piece, re.DOTALL).fullmatch
        except re.error:
            return None
        if body.startswith("*", i):
            atoms.append(("star", test))
            i += 1
        else:
            atoms.append(("one", test))
    return atoms


class Linear:
    """A compiled pattern whose ``match`` (whole string) runs in linear time: the regex's own when it
    has fewer than ``_NFA_FROM`` unbounded parts, else the automaton.  For other wildcard
    languages built on the same regex shapes (``backend.fileops.copy``'s ``filepath.Match``)."""

    def __init__(self, regex: re.Pattern[str]) -> None:
        atoms = _atoms(regex.pattern)
        self.pattern = regex.pattern
        if atoms is not None and sum(kind != "one" for kind, _ in atoms) >= _NFA_FROM:
            self.match = lambda text: _nfa_match(atoms, text)  # type: ignore[method-assign]
        else:
            self.match = regex.match  # type: ignore[method-assign]


def _ANY(c: str) -> bool:
    return True


def _nfa_match(atoms: list[tuple[str, object]], text: str) -> bool:
    """Whether ``atoms`` match all of ``text``: the set of states advanced one character at a time
    (a state is an atom index, and for ``(.*/)?`` whether it is inside the group)."""
    n = len(atoms)

    def closure(states: set[tuple[int, bool]]) -> set[tuple[int, bool]]:
        todo = list(states)
        while todo:
            k, inside = todo.pop()
            if k < n and not inside and atoms[k][0] != "one" and (k + 1, False) not in states:
                states.add((k + 1, False))
                todo.append((k + 1, False))
        return states

    current = closure({(0, False)})
    for c in text:
        following: set[tuple[int, bool]] = set()
        for k, inside in current:
            if k >= n:
                continue
            kind, test = atoms[k]
            if kind == "one":
                if test(c):  # type: ignore[operator]
                    following.add((k + 1, False))
            elif kind == "star":
                if test(c):  # type: ignore[operator]
                    following.add((k, False))
            else:
                following.add((k, True))
                if c == "/":
                    following.add((k + 1, False))
        if not following:
            return False
        current = closure(following)
    return (n, False) in current


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """The regular expression patternmatcher builds for a cleaned pattern (without ``!``)."""
    rx = ["^"]
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        ch = pattern[i]
        i += 1
        if in_class and ch in "[&~|":
            # literal in a Go class too; escaped so Python does not read a nested set or a set
            # operation (and warn: "FutureWarning: Possible nested set")
            rx.append("\\" + ch)
            continue
        if ch == "[" or (ch == "]" and in_class):
            in_class = ch == "["
        if ch == "*":
            if i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":
                    i += 1
                rx.append(".*" if i >= n else "(.*/)?")
            elif in_class:  # Go reads the "[^/]" it emits as "[", "^", "/" in the open class, then "]"
                rx.append("\\[\\^/]*")
                in_class = False
            else:
                rx.append("[^/]*")
        elif ch == "?":
            rx.append("\\[\\^/]" if in_class else "[^/]")
            in_class = False
        elif ch in _REGEX_ESCAPE:
            rx.append("\\" + ch)
        elif ch == "\\":
            if i < n:
                rx.append(re.escape(pattern[i]))
                i += 1
            else:
                rx.append("\\\\")
        else:
            rx.append(ch)  # "[", "]", "^", "-" and literal characters go through as Go does
    rx.append("\\Z")
    try:
        return re.compile("".join(rx))
    except re.error as e:
        raise PatternError(f"invalid pattern {pattern!r}: {e}") from None


class Pattern:
    """One cleaned pattern; ``exclusion`` is True for ``!pattern``."""

    __slots__ = ("text", "exclusion", "regex", "segments", "_kind", "_arg", "test")

    def __init__(self, text: str, exclusion: bool) -> None:
        self.text = text
        self.exclusion = exclusion
        self.segments = tuple(text.split("/"))
        self.regex = compile_pattern(text)
        # patternmatcher's fast paths: an exact string, a "prefix**" or a "**suffix" without other magic
        magic = any(c in text for c in "*?[]\\")
        if not magic:
            self._kind, self._arg = "exact", text
        elif text.startswith("**") and not any(c in text[2:] for c in "*?[]\\"):
            self._kind, self._arg = "suffix", text[2:]
        elif text.endswith("**") and not any(c in text[:-2] for c in "*?[]\\"):
            self._kind, self._arg = "prefix", text[:-2]
        else:
            self._kind, self._arg = "regex", None
        self.test = self._tester()

    def _tester(self):
        """``path -> truthy`` for this pattern, one call into C (a walk makes it once per path and pattern)."""
        kind, arg = self._kind, self._arg
        if kind == "exact":
            return arg.__eq__
        if kind == "prefix":  # str.startswith
            return re.compile(re.escape(arg)).match
        if kind == "suffix":  # str.endswith; "**/x" also matches "x" itself
            if arg.startswith("/"):
                return re.compile("(?:^|/)" + re.escape(arg[1:]) + "\\Z").search
            return re.compile(re.escape(arg) + "\\Z").search
        atoms = _atoms(self.regex.pattern)
        if atoms is not None and sum(kind != "one" for kind, _ in atoms) >= _NFA_FROM:
            return lambda path: _nfa_match(atoms, path)
        return self.regex.match

    def match(self, path: str) -> bool:
        return bool(self.test(path))

    def may_match_below(self, dir_parts: tuple[str, ...]) -> bool:
        """Could this pattern match some path strictly inside the directory ``dir_parts``?"""
        if "[" in self.text or "\\" in self.text:
            return True  # a class or an escape may do what a per-segment test cannot see: be safe
        segs = self.segments
        for i, part in enumerate(dir_parts):
            if i >= len(segs):
                return False
            seg = segs[i]
            if "**" in seg:
                return True
            if not compile_pattern(seg).match(part):
                return False
        return len(segs) > len(dir_parts)

    def __repr__(self) -> str:
        return f"Pattern({'!' if self.exclusion else ''}{self.text})"


def parse_pattern(raw: str) -> Pattern | None:
    """A pattern as ``patternmatcher.New`` reads it; None for a blank one."""
    p = raw.strip()
    if not p:
        return None
    exclusion = p.startswith("!")
    if exclusion:
        p = p[1:].strip()
        if not p:
            raise PatternError('illegal exclusion pattern: "!"')
    p = clean_path(p)
    if len(p) > 1 and p.startswith("/"):
        p = p.lstrip("/") or "/"
    _check_syntax(p)
    return Pattern(p, exclusion)


class Matcher:
    """Compiled patterns.  ``matches("a/b.txt")`` is the patternmatcher verdict for that path."""

    _CACHE_LIMIT = 200_000

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns: list[Pattern] = [p for p in map(parse_pattern, patterns) if p is not None]
        self.has_exclusions = any(p.exclusion for p in self.patterns)
        self._tests = tuple((1 << i, p.test) for i, p in enumerate(self.patterns))
        self._dir_masks: dict[str, int] = {}
        self._verdicts: dict[int, bool] = {}  # mask -> verdict: a walk sees few distinct masks

    def __bool__(self) -> bool:
        return bool(self.patterns)

    @staticmethod
    def _normalize(relpath: str) -> str:
        path = clean_path(relpath)
        if path.startswith("/"):
            path = path.lstrip("/") or "."
        return path

    def _own_mask(self, path: str) -> int:
        mask = 0
        for bit, test in self._tests:
            if test(path):
                mask |= bit
        return mask

    def _ancestor_mask(self, dirpath: str) -> int:
        """Bit i set when pattern i matches ``dirpath`` or one of its parents (memoised, iterative:
        a context may nest deeper than Python's recursion limit)."""
        if dirpath in ("", ".", "/"):
            return self._own_mask(dirpath) if dirpath == "/" else 0
        cached = self._dir_masks.get(dirpath)
        if cached is not None:
            return cached
        chain = []
        path = dirpath
        mask = 0
        while path not in ("", ".", "/"):
            known = self._dir_masks.get(path)
            if known is not None:
                mask = known
                break
            chain.append(path)
            parent = posixpath.dirname(path)
            if parent == path:  # "//": a path nobody should pass, but not a reason to loop forever
                break
            path = parent
        else:
            mask = self._own_mask(path) if path == "/" else 0
        if len(self._dir_masks) + len(chain) >= self._CACHE_LIMIT:
            self._dir_masks.clear()
        for path in reversed(chain):
            mask |= self._own_mask(path)
            self._dir_masks[path] = mask
        return mask

    def _verdict(self, mask: int) -> bool:
        known = self._verdicts.get(mask)
        if known is not None:
            return known
        if len(self._verdicts) >= self._CACHE_LIMIT:
            self._verdicts.clear()
        self._verdicts[mask] = verdict = self._apply(mask)
        return verdict

    def _apply(self, mask: int) -> bool:
        """The patterns in order over the ones ``mask`` says match: the last match wins."""
        matched = False
        for i, p in enumerate(self.patterns):
            if p.exclusion != matched:
                continue
            if mask >> i & 1:
                matched = not p.exclusion
        return matched

    def matches(self, relpath: str) -> bool:
        """Does ``relpath`` match, itself or through a parent directory?  The path is taken as given
        (relative, slash separated, clean), like ``MatchesOrParentMatches``; ``.`` never matches."""
        if not self.patterns:
            return False
        path = relpath
        if path in ("", "."):
            return False
        mask = self._ancestor_mask(posixpath.dirname(path)) | self._own_mask(path)
        return self._verdict(mask)

    def matches_exact(self, relpath: str) -> bool:
        """``MatchesExact``: the verdict without looking at parent directories."""
        return self._verdict(self._own_mask(relpath)) if relpath not in ("", ".") else False

    def may_match_under(self, dirpath: str) -> bool:
        """Could some path strictly below ``dirpath`` match?  (False → an include filter may prune it.)"""
        path = self._normalize(dirpath)
        if path == ".":
            return any(not p.exclusion for p in self.patterns)
        if self.matches(path):
            return True  # children inherit the match unless an exception flips them
        parts = tuple(path.split("/"))
        return any(not p.exclusion and p.may_match_below(parts) for p in self.patterns)

    def may_unmatch_under(self, dirpath: str) -> bool:
        """Could some path strictly below ``dirpath`` *not* match?  (False → an exclude filter may prune.)"""
        path = self._normalize(dirpath)
        if path == "." or not self.matches(path):
            return True
        if not self.has_exclusions:
            return False
        parts = tuple(path.split("/"))
        return any(p.exclusion and p.may_match_below(parts) for p in self.patterns)
