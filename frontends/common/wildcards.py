"""Shell wildcards in ``${v#p}``, ``${v%p}``, ``${v/p/r}``: matched in time linear in the value.

Part of BuildKit's shell-word lexer (:mod:`frontends.common.expand`), kept apart because it is a
matcher of its own with its own reasoning (below); the lexer calls :func:`trim_prefix`,
:func:`trim_suffix` and :func:`substitute`.
"""

from __future__ import annotations

import re

from frontends.common.errors import ExpandError


# A substitution pattern is a shell wildcard: literal characters, ``?`` (one character) and ``*`` (any
# run).  BuildKit turns it into a Go regexp, which runs in linear time; Python's backtracking ``re``
# takes time exponential in the number of stars (``${V/*a*a*a*a*a*a*a*a*b/x}`` on 300 characters does
# not finish), and the Dockerfile is untrusted.  So a pattern with a star is matched by stepping through
# its automaton (`_Glob`), whose time is linear in the value times the pattern; star-free patterns keep
# the C regex, which is linear for them.  The answers are the regexp's: for a pattern of literals, ``?``
# and ``*`` alone, a leftmost-first match with greedy stars is the leftmost start's longest match, and an
# anchored one with lazy stars is the shortest matching prefix (`tests/dockerfile/test_expand.py`
# checks both against the regex on random patterns).

_STAR, _ANY = object(), object()


def glob_tokens(pattern: str) -> tuple:
    """The pattern as literal characters, ``_ANY`` and ``_STAR`` (runs of stars folded into one)."""
    out: list = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            if not out or out[-1] is not _STAR:
                out.append(_STAR)
        elif ch == "?":
            out.append(_ANY)
        elif ch == "\\":
            if i < n and pattern[i] in "}/":
                continue
            nxt = pattern[i] if i < n else ""
            i += 1
            if nxt not in ("*", "?", "\\"):
                raise ExpandError(f"invalid pattern ({pattern}) in substitution: invalid escape '\\{nxt}'")
            out.append(nxt)
        else:
            out.append(ch)
    return tuple(out)


def _regex(tokens: tuple, greedy: bool, anchored: bool) -> "re.Pattern[str]":
    star = ".*" if greedy else ".*?"
    body = "".join(star if t is _STAR else "." if t is _ANY else re.escape(t) for t in tokens)
    return re.compile(("^" if anchored else "") + body)


class _Glob:
    """The automaton of a wildcard pattern: state ``i`` = the first ``i`` tokens are matched."""

    def __init__(self, tokens: tuple) -> None:
        self.tokens = tokens
        self.accept = len(tokens)

    def _close(self, states: dict[int, int]) -> dict[int, int]:
        """Add the states reachable by letting a star match nothing (keeping each state's earliest start)."""
        for i in sorted(states):
            if i < self.accept and self.tokens[i] is _STAR:
                j, start = i + 1, states[i]
                if states.get(j, start + 1) > start:
                    states[j] = start
        return states

    def _step(self, states: dict[int, int], ch: str) -> dict[int, int]:
        nxt: dict[int, int] = {}
        for i, start in states.items():
            if i == self.accept:
                continue
            t = self.tokens[i]
            if t is _STAR or t is _ANY:  # like the regexp's ".": any character but a newline
                j = -1 if ch == "\n" else i if t is _STAR else i + 1
            else:
                j = i + 1 if t == ch else -1
            if j >= 0 and nxt.get(j, start + 1) > start:
                nxt[j] = start
        return self._close(nxt)

    def prefix(self, value: str, longest: bool) -> int | None:
        """The length of the shortest (or longest) prefix of ``value`` the pattern matches whole."""
        states = self._close({0: 0})
        found = None
        for pos in range(len(value) + 1):
            if self.accept in states:
                found = pos
                if not longest:
                    return found
            if pos == len(value) or not states:
                break
            states = self._step(states, value[pos])
        return found

    def search(self, value: str, begin: int) -> tuple[int, int] | None:
        """The leftmost match at or after ``begin`` and, from that start, its longest end."""
        states: dict[int, int] = {}
        best: tuple[int, int] | None = None
        for pos in range(begin, len(value) + 1):
            if best is None:  # a thread may still start here
                states = self._close({**states, 0: min(states.get(0, pos), pos)})
            if self.accept in states:
                start = states[self.accept]
                if best is None or start < best[0] or (start == best[0] and pos > best[1]):
                    best = (start, pos)
            if best is not None:  # only threads of the chosen start can still lengthen its match
                states = {i: s for i, s in states.items() if s == best[0]}
            if pos == len(value) or not states:
                break
            states = self._step(states, value[pos])
        return best


def substitute(tokens: tuple, value: str, repl, replace_all: bool) -> str:
    """``${V/pattern/repl}`` (``//``: every match), greedy stars, as BuildKit's regexp does."""
    if _STAR not in tokens or all(t is _STAR for t in tokens):  # linear in the C regex
        rx = _regex(tokens, greedy=True, anchored=False)
        return rx.sub(lambda m: repl(m.group(0)), value, count=0 if replace_all else 1)
    glob, out, pos = _Glob(tokens), [], 0
    while (m := glob.search(value, pos)) is not None:
        out += [value[pos:m[0]], repl(value[m[0]:m[1]])]
        pos = m[1]
        if not replace_all:
            break
    return "".join(out) + value[pos:]


def go_template(replacement: str):
    """Go's ``Regexp.ReplaceAllString`` treats ``$0``/``${0}`` as the match, ``$$`` as ``$`` and any
    other ``$name`` as an (empty) group; reproduce that with a replacement function."""
    if "$" not in replacement:
        return lambda text: replacement
    parts: list[str | int] = []
    i, n = 0, len(replacement)
    while i < n:
        ch = replacement[i]
        if ch != "$" or i + 1 >= n:
            parts.append(ch)
            i += 1
            continue
        nxt = replacement[i + 1]
        if nxt == "$":
            parts.append("$")
            i += 2
            continue
        m = re.match(r"\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+)", replacement[i + 1 :])
        if not m:
            parts.append("$")
            i += 1
            continue
        name = m.group(1) or m.group(2)
        parts.append(0 if name == "0" or (name.isdigit() and int(name) == 0) else "")
        i += 1 + m.end()
    return lambda text: "".join(text if p == 0 else p for p in parts)


def trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    """``${V#pattern}`` (shortest matching prefix removed; ``##``: longest)."""
    tokens = glob_tokens(pattern)
    if _STAR not in tokens:
        m = _regex(tokens, greedy, anchored=True).match(value)
        return value[m.end():] if m else value
    end = _Glob(tokens).prefix(value, longest=greedy)
    return value if end is None else value[end:]


def _reverse_pattern(pattern: str) -> str:
    """Reverse a pattern keeping ``\\x`` escapes in order (``a\\*c`` → ``c\\*a``)."""
    units: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            units.append(pattern[i : i + 2])
            i += 2
        else:
            units.append(pattern[i])
            i += 1
    return "".join(reversed(units))


def trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    return trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]
