"""BuildKit's shell-word lexer: quote removal, ``$var`` expansion and word splitting.

Dockerfile instructions are not run through a shell, yet their arguments follow a small subset of
``sh`` rules (``frontend/dockerfile/shell/lex.go``).  This is that subset, behaviour for behaviour,
checked against BuildKit's own tables (``envVarTest``, ``wordsTest``):

* ``'…'`` keeps everything literally; ``"…"`` expands ``$`` and lets the escape character escape
  only ``"``, ``$`` and itself; outside quotes the escape character escapes any character, and
  one at the very end is dropped.
* ``$name``, ``${name}``, positional/special parameters (``$1``, ``$@``, …, always empty),
  ``${v:-w}`` ``${v-w}`` ``${v:+w}`` ``${v+w}`` ``${v:?w}`` ``${v?w}`` ``${v#p}`` ``${v##p}``
  ``${v%p}`` ``${v%%p}`` ``${v/p/r}`` ``${v//p/r}`` (patterns: ``*`` and ``?``).
* :meth:`Expander.words` splits on whitespace *after* expansion, except inside quotes
  (``ProcessWords``); :meth:`Expander.word` keeps the spaces (``ProcessWord``).

Public API::

    Expander(escape="\\\\", raw_quotes=False, raw_escapes=False, skip_unset=False)
    Expander().word("${A:-x}", {"A": "1"})   -> "1"
    Expander().words('a "b c" $V', env)       -> ["a", "b c", ...]
    Expander().expand("...", env)             -> Expansion(result, words, matched, unmatched)
    expand_word(text, env, escape="\\\\")       convenience function; ExpandError on bad syntax

``env`` is any mapping of name to value.  Names are case-sensitive (Linux semantics) unless
``case_insensitive_env=True`` (a Windows build).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

from frontends.errors import FrontendError

_SPECIAL_PARAMS = "@*#?-$!0"

#: Go's ``unicode.IsSpace`` (Python's ``str.isspace`` also counts U+001C..U+001F).
GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + "\u2028\u2029\u202f\u205f\u3000"
)
_SPACE = frozenset(GO_SPACE)


def _is_name_char(ch: str) -> bool:
    return ch.isalpha() or ch.isdecimal() or ch == "_"


class ExpandError(FrontendError):
    """A word that cannot be expanded: unbalanced quotes or braces, bad ``${…}`` syntax, ``${v?}``."""

    def __init__(self, message: str, source: str = "") -> None:
        self.message = message
        self.source = source
        super().__init__(f"failed to process {_go_quote(source)}: {message}" if source else message)


def _go_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


@dataclass
class Expansion:
    """Everything one pass over a word produced."""

    result: str
    words: list[str]
    matched: set[str] = field(default_factory=set)
    unmatched: set[str] = field(default_factory=set)


class _Words:
    """Accumulates split words: unquoted whitespace ends a word, quoted text never does."""

    __slots__ = ("words", "word", "in_word")

    def __init__(self) -> None:
        self.words: list[str] = []
        self.word = ""
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch in _SPACE:
            if self.in_word and self.word:
                self.words.append(self.word)
                self.word = ""
                self.in_word = False
        else:
            self.word += ch
            self.in_word = True

    def add_raw(self, s: str) -> None:
        self.word += s
        self.in_word = True

    def add_string(self, s: str) -> None:
        for ch in s:
            self.add_char(ch)

    def finish(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word = ""
            self.in_word = False
        return self.words


class _Pass:
    """State of one expansion: the text, a cursor, the environment and what was looked up."""

    def __init__(self, lex: "Expander", text: str, env: Mapping[str, str]) -> None:
        self.lex = lex
        self.s = text
        self.i = 0
        self.env = env
        self.raw_escapes = lex.raw_escapes
        self.matched: set[str] = set()
        self.unmatched: set[str] = set()

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def next(self) -> str:
        if self.i < len(self.s):
            ch = self.s[self.i]
            self.i += 1
            return ch
        return ""

    def lookup(self, name: str) -> tuple[str, bool]:
        if name in self.env:
            self.matched.add(name)
            return self.env[name], True
        if self.lex.case_insensitive_env:  # Windows: EqualEnvKeys ignores case
            upper = name.upper()
            for key, value in self.env.items():
                if key.upper() == upper:
                    self.matched.add(name)
                    return value, True
        self.unmatched.add(name)
        return "", False

    # -- the main loop: read until EOF or ``stop`` -------------------------------------------
    def run(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        saved = self.raw_escapes
        self.raw_escapes = raw_escapes
        try:
            return self._run(stop)
        finally:
            self.raw_escapes = saved

    def _run(self, stop: str) -> tuple[str, list[str]]:
        out: list[str] = []
        words = _Words()
        esc = self.lex.escape
        quotes = not self.lex.skip_process_quotes
        s = self.s
        while self.i < len(s):
            ch = s[self.i]
            if stop and ch == stop:
                self.i += 1
                return "".join(out), words.finish()
            if ch == "$":
                tmp = self.dollar()
                out.append(tmp)
                words.add_string(tmp)
            elif quotes and ch == "'":
                tmp = self.single_quote()
                out.append(tmp)
                words.add_raw(tmp)
            elif quotes and ch == '"':
                tmp = self.double_quote()
                out.append(tmp)
                words.add_raw(tmp)
            else:
                self.i += 1
                if ch == esc:
                    if self.raw_escapes:
                        words.add_raw(ch)
                        out.append(ch)
                    ch = self.next()
                    if not ch:
                        break
                    words.add_raw(ch)
                else:
                    words.add_char(ch)
                out.append(ch)
        if stop:
            raise ExpandError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(out), words.finish()

    def single_quote(self) -> str:
        raw = self.lex.raw_quotes
        self.i += 1
        end = self.s.find("'", self.i)
        if end < 0:
            raise ExpandError("unexpected end of statement while looking for matching single-quote")
        body = self.s[self.i : end]
        self.i = end + 1
        return f"'{body}'" if raw else body

    def double_quote(self) -> str:
        raw = self.lex.raw_quotes
        esc = self.lex.escape
        out = ['"'] if raw else []
        self.i += 1
        while True:
            ch = self.peek()
            if not ch:
                raise ExpandError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.i += 1
                if raw:
                    out.append('"')
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            self.i += 1
            if ch == esc:
                if self.raw_escapes:
                    out.append(ch)
                nxt = self.peek()
                if not nxt:
                    continue
                if nxt in ('"', "$", esc):
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        s, start = self.s, self.i
        if start >= len(s):
            return ""
        ch = s[start]
        if ch.isdecimal():
            j = start
            while j < len(s) and s[j].isdecimal():
                j += 1
            self.i = j
            return s[start:j]
        if ch in _SPECIAL_PARAMS:
            self.i += 1
            return ch
        j = start
        while j < len(s) and _is_name_char(s[j]):
            j += 1
        self.i = j
        return s[start:j]

    def dollar(self) -> str:
        self.i += 1  # the '$'
        skip = self.lex.skip_unset_env
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            value, found = self.lookup(name)
            if not found and skip:
                return "$" + name
            return value
        self.i += 1  # the '{'
        ch = self.peek()
        if not ch:
            raise ExpandError("syntax error: missing '}'")
        if ch in "{}:":
            raise ExpandError("syntax error: bad substitution")
        name = self.name()
        op = self.next()
        if op == "}":
            value, found = self.lookup(name)
            if not found and skip:
                return "${" + name + "}"
            return value
        ops = op
        if op == ":":
            # ':' makes an empty value count as unset; whatever follows is the modifier
            # (an unknown one is reported after its word has been read, as BuildKit does)
            op = self.next()
            return self._modifier(name, op, ops + op, True)
        if op and op in "+-?#%":
            return self._modifier(name, op, ops, False)
        if op == "/":
            return self._replace(name)
        raise ExpandError(f"unsupported modifier ({ops}) in substitution")

    def _modifier(self, name: str, op: str, ops: str, null_is_unset: bool) -> str:
        try:
            word, _ = self.run("}", op in ("#", "%"))
        except ExpandError:
            if not self.peek():
                raise ExpandError("syntax error: missing '}'") from None
            raise
        value, found = self.lookup(name)
        if self.lex.skip_unset_env and not found:
            return "${" + name + ops + word + "}"
        empty = not found or (null_is_unset and value == "")
        if op == "-":
            return word if empty else value
        if op == "+":
            return "" if empty else word
        if op == "?":
            if not found:
                raise ExpandError(f"{name}: {word or 'is not allowed to be unset'}")
            if null_is_unset and value == "":
                raise ExpandError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        if op in ("#", "%"):
            greedy = word.startswith(op)
            if greedy:
                word = word[1:]
            if op == "%":
                return _trim_suffix(word, value, greedy)
            return _trim_prefix(word, value, greedy)
        raise ExpandError(f"unsupported modifier ({ops}) in substitution")

    def _replace(self, name: str) -> str:
        replace_all = self.peek() == "/"
        if replace_all:
            self.i += 1
        try:
            pattern, _ = self.run("/", True)
        except ExpandError:
            if not self.peek():
                raise ExpandError("syntax error: missing '/' in ${}") from None
            raise
        try:
            replacement, _ = self.run("}", True)
        except ExpandError:
            if not self.peek():
                raise ExpandError("syntax error: missing '}'") from None
            raise
        value, found = self.lookup(name)
        if self.lex.skip_unset_env and not found:
            return "${%s/%s/%s}" % (name, pattern, replacement)
        return _substitute(_glob_tokens(pattern), value, _go_template(replacement), replace_all)


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


def _glob_tokens(pattern: str) -> tuple:
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


def _substitute(tokens: tuple, value: str, repl, replace_all: bool) -> str:
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


def _go_template(replacement: str):
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


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    """``${V#pattern}`` (shortest matching prefix removed; ``##``: longest)."""
    tokens = _glob_tokens(pattern)
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


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]


class Expander:
    """A configured lexer (BuildKit's ``shell.Lex``); cheap to create, safe to reuse."""

    def __init__(
        self,
        escape: str = "\\",
        *,
        raw_quotes: bool = False,
        raw_escapes: bool = False,
        skip_process_quotes: bool = False,
        skip_unset_env: bool = False,
        case_insensitive_env: bool = False,
    ) -> None:
        if escape not in ("\\", "`"):
            raise ValueError(f"escape token must be \\ or `, not {escape!r}")
        self.escape = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_process_quotes = skip_process_quotes
        self.skip_unset_env = skip_unset_env
        self.case_insensitive_env = case_insensitive_env

    def expand(self, text: str, env: Mapping[str, str] | None = None) -> Expansion:
        p = _Pass(self, text, env or {})
        try:
            result, words = p.run("", self.raw_escapes)
        except ExpandError as e:
            raise ExpandError(e.message, text) from None
        return Expansion(result, words, p.matched, p.unmatched)

    def word(self, text: str, env: Mapping[str, str] | None = None) -> str:
        """``ProcessWord``: expand, remove quotes, keep whitespace."""
        return self.expand(text, env).result

    def words(self, text: str, env: Mapping[str, str] | None = None) -> list[str]:
        """``ProcessWords``: expand, remove quotes, split on unquoted whitespace."""
        return self.expand(text, env).words


def expand_word(text: str, env: Mapping[str, str] | None = None, escape: str = "\\") -> str:
    return Expander(escape).word(text, env)


def expand_words(text: str, env: Mapping[str, str] | None = None, escape: str = "\\") -> list[str]:
    return Expander(escape).words(text, env)
