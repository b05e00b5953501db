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

from dataclasses import dataclass, field
from typing import Mapping

from frontends.common.errors import ExpandError
from frontends.common.wildcards import glob_tokens, go_template, substitute, trim_prefix, trim_suffix

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
                return trim_suffix(word, value, greedy)
            return trim_prefix(word, value, greedy)
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
        return substitute(glob_tokens(pattern), value, go_template(replacement), replace_all)


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
