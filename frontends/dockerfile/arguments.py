"""Argument rules of Dockerfile instructions, as BuildKit's ``line_parsers.go`` and
``split_command.go`` apply them to one joined line.

* :func:`extract_flags` – the leading ``--name[=value]`` words (quotes and escapes removed), each
  with its offsets in the line so errors inside a flag can be pointed at;
* :func:`apply_rule` – the per-keyword rule: JSON-or-shell (RUN/CMD/ENTRYPOINT/SHELL),
  JSON-or-whitespace-list (ADD/COPY/VOLUME), whitespace list (FROM/EXPOSE), one string
  (USER/WORKDIR/…), words (ARG), ``k=v`` pairs or the legacy ``k v`` (ENV/LABEL), HEALTHCHECK;
* :func:`parse_json_array` – the exec form, decided by the LALR grammar ``grammar.lark`` (Go's
  ``encoding/json`` strictness) with a fast path for the common array of plain strings.

The ``<<[-]NAME`` words of RUN/COPY/ADD are :mod:`.heredocs`'.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache

from frontends.common.expand import GO_SPACE
from frontends.common.gostrings import go_quote

TOKEN_WS = re.compile(r"[\t\v\f\r ]+")
_SPACE = frozenset(GO_SPACE)
_SPACES = re.compile("[" + re.escape(GO_SPACE) + "]+")
_PLAIN_WORD = re.compile("[^'\"" + re.escape(GO_SPACE) + "]*")
#: keyword → argument rule (BuildKit's dispatch table)
RULES = {
    "add": "json_or_list",
    "arg": "name_or_name_val",
    "cmd": "json_or_string",
    "copy": "json_or_list",
    "entrypoint": "json_or_string",
    "env": "name_val",
    "expose": "list",
    "from": "list",
    "healthcheck": "health",
    "label": "name_val",
    "maintainer": "string",
    "onbuild": "sub_command",
    "run": "json_or_string",
    "shell": "json_or_string",
    "stopsignal": "string",
    "user": "string",
    "volume": "json_or_list",
    "workdir": "string",
}

NOT_STRING_ARRAY = "when using JSON array syntax, arrays must be comprised of strings only"


class NotJSON(Exception):
    pass


class NotStrings(Exception):
    pass


@lru_cache(maxsize=1)
def _json_parser():
    from lark import Lark

    return Lark.open_from_package(
        "frontends.dockerfile", "grammar.lark", start="json_array", parser="lalr"
    )


def _decode_jstring(tok: str) -> str:
    s = json.loads(tok)
    if any("\ud800" <= c <= "\udfff" for c in s):  # Go replaces unpaired surrogates
        s = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in s)
    return s


def parse_json_array(rest: str) -> list[str]:
    """Exec form: a JSON array of strings (Go ``encoding/json`` strictness).  Raises ``NotJSON``
    when ``rest`` is not a JSON array at all and ``NotStrings`` for an array of non-strings."""
    rest = rest.lstrip(GO_SPACE)
    if not rest.startswith("["):
        raise NotJSON()
    # Fast path: whenever Python's (also strict, RFC 8259) decoder reads an array of strings,
    # Go's does too, with the same result.  Everything else (invalid JSON, NaN, numbers, nested
    # values) is classified by the grammar, which is the definition of the exec form.
    try:
        fast = json.loads(rest)
    except ValueError:
        fast = None
    if isinstance(fast, list) and all(type(x) is str for x in fast):
        if any("\ud800" <= c <= "\udfff" for x in fast for c in x):
            fast = ["".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in x) for x in fast]
        return fast
    from lark.exceptions import LarkError

    try:
        tree = _json_parser().parse(rest)
    except LarkError:
        raise NotJSON() from None
    out = []
    for child in tree.children:
        if child is None:
            continue
        if child.data != "jstring":
            raise NotStrings()
        out.append(_decode_jstring(child.children[0]))
    return out


@dataclass(slots=True)
class FlagWord:
    """A ``--flag[=value]`` word before the arguments, unquoted; ``start``/``end`` index the line."""

    text: str
    start: int
    end: int
    offsets: tuple[int, ...] = ()  # offset in the line of each character (empty: contiguous)

    def source_offset(self, index: int) -> int:
        """Where character ``index`` of :attr:`text` is in the line (quotes/escapes skipped)."""
        if not self.offsets:
            return min(self.start + max(index, 0), self.end)
        if 0 <= index < len(self.offsets):
            return self.offsets[index]
        return self.end if index >= len(self.offsets) else self.start


# -- argument rules ---------------------------------------------------------------------------


_RUN_PLAIN = {e: re.compile("[^'\"" + re.escape(e + GO_SPACE) + "]+") for e in ("\\", "`")}
_RUN_QUOTED = {(q, e): re.compile("[^" + re.escape(q + e) + "]+") for q in "'\"" for e in ("\\", "`")}


def parse_words(rest: str, escape: str) -> list[str]:
    """BuildKit ``parseWords``: split on whitespace outside quotes, keeping quotes and escapes."""
    if escape not in rest and "'" not in rest and '"' not in rest:
        return [w for w in _SPACES.split(rest) if w]
    words: list[str] = []
    buf: list[str] = []
    blank_ok = False
    in_word = False
    quote = ""
    n = len(rest)
    i = 0
    while i < n:
        ch = rest[i]
        if not in_word:
            if ch in _SPACE:
                i += 1
                continue
            in_word = True
        if not quote:
            if ch not in _SPACE and ch not in "'\"" and ch != escape:
                j = _RUN_PLAIN[escape].match(rest, i).end()  # a run of ordinary characters
                buf.append(rest[i:j])
                i = j
                continue
            if ch in _SPACE:
                if blank_ok or buf:
                    words.append("".join(buf))
                buf = []
                blank_ok = False
                in_word = False
                i += 1
                continue
            if ch in "'\"":
                quote = ch
                blank_ok = True
            if ch == escape:
                if i + 1 == n:
                    i += 1
                    continue
                buf.append(ch)
                i += 1
                ch = rest[i]
            buf.append(ch)
            i += 1
            continue
        # inside quotes
        if ch != quote and ch != escape:
            j = _RUN_QUOTED[quote, escape].match(rest, i).end()
            buf.append(rest[i:j])
            i = j
            continue
        if ch == quote:
            quote = ""
        elif ch == escape and quote != "'":
            if i + 1 == n:
                quote = ""
                i += 1
                continue
            buf.append(ch)
            i += 1
            ch = rest[i]
        buf.append(ch)
        i += 1
    if in_word and (blank_ok or buf):
        words.append("".join(buf))
    return words


def _split_ws(rest: str) -> list[str]:
    if rest == "":
        return []
    return TOKEN_WS.split(rest)


class ArgError(Exception):
    def __init__(self, message: str, offset: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


def _name_val(rest: str, key: str, escape: str) -> list[str]:
    words = parse_words(rest, escape)
    if not words:
        return []
    if "=" not in words[0]:
        parts = TOKEN_WS.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise ArgError(f"{key} must have two arguments")
        return [parts[0], parts[1], ""]
    out: list[str] = []
    for w in words:
        if "=" not in w:
            raise ArgError(
                f"Syntax error - can't find = in {go_quote(w)}. Must be of the form: name=value",
                max(rest.find(w), 0),
            )
        k, _, v = w.partition("=")
        out += [k, v, "="]
    return out


def _maybe_json(rest: str) -> tuple[list[str], bool]:
    try:
        return parse_json_array(rest), True
    except NotStrings:
        raise ArgError(NOT_STRING_ARRAY) from None
    except NotJSON:
        return [rest], False


def apply_rule(keyword: str, rest: str, escape: str) -> tuple[list[str], bool]:
    rule = RULES.get(keyword)
    if rule is None:
        return [""], False
    if rule == "string":
        return ([rest] if rest else []), False
    if rule == "list":
        return _split_ws(rest), False
    if rule == "json_or_string":
        if rest == "":
            return [], False
        return _maybe_json(rest)
    if rule == "json_or_list":
        try:
            return parse_json_array(rest), True
        except NotStrings:
            raise ArgError(NOT_STRING_ARRAY) from None
        except NotJSON:
            return _split_ws(rest), False
    if rule == "name_or_name_val":
        return parse_words(rest, escape), False
    if rule == "name_val":
        return _name_val(rest, "LABEL" if keyword == "label" else "ENV", escape), False
    if rule == "health":
        # BuildKit scans this line byte by byte (``unicode.IsSpace(rune(rest[i]))``): in a
        # multi-byte character only a lone 0x85 or 0xA0 byte counts as a space.
        raw = rest.encode("utf-8", "surrogatepass")
        sep = 0
        while sep < len(raw) and chr(raw[sep]) not in _SPACE:
            sep += 1
        if sep == 0:
            return [], False
        nxt = sep
        while nxt < len(raw) and chr(raw[nxt]) in _SPACE:
            nxt += 1
        typ = raw[:sep].decode("utf-8", "replace")
        tail = raw[nxt:].decode("utf-8", "replace")
        if tail == "":
            return [typ], False
        vals, is_json = _maybe_json(tail)
        return [typ] + vals, is_json
    raise AssertionError(rule)


# -- keyword and flags ----------------------------------------------------------------------


def _byte_view(line: str) -> tuple[str, list[int]]:
    """BuildKit reads flags byte by byte (``rune(line[pos])``): every byte of a non-ASCII
    character becomes the Latin-1 character of that value, and the bytes 0x85 and 0xA0 count as
    spaces.  Reproduce that view of ``line``, with the index in ``line`` of every byte."""
    chars: list[str] = []
    offs: list[int] = []
    for k, c in enumerate(line):
        if c < "\x80":
            chars.append(c)
            offs.append(k)
        else:
            for b in c.encode("utf-8", "surrogatepass"):
                chars.append(chr(b))
                offs.append(k)
    return "".join(chars), offs


def extract_flags(line: str, base: int, escape: str) -> tuple[int, list[FlagWord]]:
    """BuildKit ``extractBuilderFlags``: leading ``--words`` (quotes and escapes removed) and the
    offset in ``line`` where the arguments begin (``len(line)`` if there are none).  The flag
    words are read the way BuildKit reads them, byte by byte (see :func:`_byte_view`)."""
    if line.isascii():
        seq, offs = line, None
    else:
        seq, offs = _byte_view(line)
    n = len(seq)

    def at(j: int) -> int:
        if offs is None:
            return j
        while 0 < j < n and offs[j] == offs[j - 1]:
            j += 1  # never cut a character in two: go on to the next one
        return offs[j] if j < n else len(line)

    words: list[FlagWord] = []
    i = 0
    while True:
        while i < n and seq[i] in _SPACE:
            i += 1
        if i >= n:
            return len(line), words
        if not seq.startswith("--", i):
            return at(i), words
        start = i
        m = _PLAIN_WORD.match(seq, i)
        end = m.end()
        if offs is None and (end == n or seq[end] in _SPACE) and escape not in seq[i:end]:
            # no quote and no escape in this word: it is taken as it stands
            word = seq[i:end]
            i = end
            if word == "--":
                return i, words
            words.append(FlagWord(word, base + start, base + i))
            continue
        buf: list[str] = []
        pos: list[int] = []
        blank_ok = False
        quote = ""
        while i < n:
            ch = seq[i]
            if quote:
                if ch == quote:
                    quote = ""
                    i += 1
                    continue
                if ch == escape:
                    if i + 1 == n:
                        quote = ""
                        i += 1
                        continue
                    i += 1
                    ch = seq[i]
                buf.append(ch)
                pos.append(base + at(i))
                i += 1
                continue
            if ch in _SPACE:
                break
            if ch in "'\"":
                quote = ch
                blank_ok = True
                i += 1
                continue
            if ch == escape:
                if i + 1 == n:
                    i += 1
                    continue
                i += 1
                ch = seq[i]
            buf.append(ch)
            pos.append(base + at(i))
            i += 1
        word = "".join(buf)
        if word == "--":
            return at(i), words
        if blank_ok or word:
            words.append(FlagWord(word, base + at(start), base + at(i), tuple(pos)))
