"""The syntax layer: logical lines → untyped instruction nodes, exactly as BuildKit's parser.

This is the stage that BuildKit calls ``parser.Parse`` (``parser.go`` + ``line_parsers.go`` +
``split_command.go``): it splits the keyword and the leading ``--flags`` off a line and reads the
arguments with the rule of that keyword (JSON-or-shell, whitespace list, ``k=v`` pairs, …).  It
accepts unknown keywords and does not look inside flags; :mod:`.instructions` does that.

Its output, :class:`SyntaxTree`, is what the differential tests compare with the reference parser
(``to_oracle_json``) and with BuildKit's ``Node.Dump()`` golden files (``dump``).

Where BuildKit v0.12.5 (the oracle) and current BuildKit differ we follow current BuildKit:
ENV/LABEL keep their separator, JSON followed by more text is shell form, ``<<  EOF`` with spaces is
a heredoc, flags use the file's escape character, and ``# check=`` is a directive.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache

from frontends.dockerfile.expand import GO_SPACE, Expander, ExpandError
from frontends.dockerfile.scanner import Directive, HeredocBody, LineSource, LogicalLine, Scanner
from frontends.errors import SourceError, Span

_TOKEN_WS = re.compile(r"[\t\v\f\r ]+")
_SPACE = frozenset(GO_SPACE)
_SPACES = re.compile("[" + re.escape(GO_SPACE) + "]+")
_PLAIN_WORD = re.compile("[^'\"" + re.escape(GO_SPACE) + "]*")
_HEREDOC_WORD = re.compile(r"(\d*)<<(-?)([^<]*)\Z", re.S)
_HEREDOC_OP = re.compile(r"(\d*)<<(-?)\Z")

HEREDOC_KEYWORDS = frozenset({"run", "copy", "add"})

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


class _NotJSON(Exception):
    pass


class _NotStrings(Exception):
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
    """Exec form: a JSON array of strings (Go ``encoding/json`` strictness).  Raises ``_NotJSON``
    when ``rest`` is not a JSON array at all and ``_NotStrings`` for an array of non-strings."""
    rest = rest.lstrip(GO_SPACE)
    if not rest.startswith("["):
        raise _NotJSON()
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
        raise _NotJSON() from None
    out = []
    for child in tree.children:
        if child is None:
            continue
        if child.data != "jstring":
            raise _NotStrings()
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


@dataclass(slots=True)
class Node:
    """One instruction as BuildKit's parser sees it."""

    cmd: str  # the keyword as written
    flags: list[FlagWord]
    values: list[str]  # the argument nodes (ENV/LABEL: key, value, separator triples)
    json: bool
    original: str
    line: LogicalLine
    args_offset: int  # where the arguments start in line.text
    cmd_offset: int
    rest: str  # the argument text (after flags), trimmed
    sub: "Node | None" = None  # ONBUILD's instruction
    heredocs: list[HeredocBody] = field(default_factory=list)

    @property
    def keyword(self) -> str:
        return self.cmd.lower()

    @property
    def start_line(self) -> int:
        return self.line.start_line

    @property
    def end_line(self) -> int:
        return self.line.end_line

    def effective(self) -> "Node":
        return self.sub if self.sub is not None else self

    def oracle_values(self) -> list[str]:
        """Values in the oracle's (BuildKit v0.12.5) shape: ENV/LABEL without separators."""
        n = self.effective()
        if n.sub is not None:  # ONBUILD ONBUILD …: the container node has an empty value
            return [""]
        if n.keyword in ("env", "label") and n.values:
            return [v for i, v in enumerate(n.values) if i % 3 != 2]
        return list(n.values)

    def to_oracle_json(self) -> dict:
        eff = self.effective()
        return {
            "cmd": self.cmd,
            "sub_cmd": self.sub.cmd if self.sub is not None else None,
            "json": eff.json,
            "original": self.original,
            "start_line": self.start_line,
            "end_line": self.end_line,
            "flags": [f.text for f in self.flags],
            "value": self.oracle_values(),
            "heredocs": [
                {"name": h.name, "file_descriptor": h.file_descriptor, "content": h.content}
                for h in self.heredocs
            ],
        }

    def dump(self) -> str:
        """BuildKit's ``Node.Dump()`` of this instruction (current BuildKit: with separators)."""
        s = self.cmd.lower()
        if self.flags:
            s += " [" + " ".join(go_quote(f.text) for f in self.flags) + "]"
        if self.sub is not None:
            s += " (" + self.sub.dump()[1:-1] + ")"
        else:
            s += "".join(" " + go_quote(v) for v in self.values)
        return "(" + s.strip() + ")"


def go_quote(s: str) -> str:
    """Go's ``strconv.Quote`` for valid UTF-8 text."""
    import unicodedata

    out = ['"']
    esc = {"\a": r"\a", "\b": r"\b", "\f": r"\f", "\n": r"\n", "\r": r"\r", "\t": r"\t",
           "\v": r"\v", "\\": "\\\\", '"': '\\"'}
    for ch in s:
        if ch in esc:
            out.append(esc[ch])
        elif " " <= ch < "\x7f":
            out.append(ch)
        elif ord(ch) < 0x20 or ch == "\x7f":
            out.append("\\x%02x" % ord(ch))
        elif ch == " " or unicodedata.category(ch)[0] in "LMNPS":
            out.append(ch)
        elif ord(ch) < 0x10000:
            out.append("\\u%04x" % ord(ch))
        else:
            out.append("\\U%08x" % ord(ch))
    out.append('"')
    return "".join(out)


@dataclass
class SyntaxTree:
    """The result of the syntax layer: directives, nodes, the escape character, parser warnings."""

    filename: str
    directives: list[Directive]
    nodes: list[Node]
    escape: str
    source: LineSource
    empty_continuations: list[tuple[int, int]] = field(default_factory=list)  # (node idx, line)

    def to_oracle_json(self) -> dict:
        return {"instructions": [n.to_oracle_json() for n in self.nodes]}

    def dump(self) -> str:
        return "".join(n.dump() + "\n" for n in self.nodes)


# -- argument rules ---------------------------------------------------------------------------


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
    return _TOKEN_WS.split(rest)


class _ArgError(Exception):
    def __init__(self, message: str, offset: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


def _name_val(rest: str, key: str, escape: str) -> list[str]:
    words = parse_words(rest, escape)
    if not words:
        return []
    if "=" not in words[0]:
        parts = _TOKEN_WS.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise _ArgError(f"{key} must have two arguments")
        return [parts[0], parts[1], ""]
    out: list[str] = []
    for w in words:
        if "=" not in w:
            raise _ArgError(
                f"Syntax error - can't find = in {go_quote(w)}. Must be of the form: name=value",
                max(rest.find(w), 0),
            )
        k, _, v = w.partition("=")
        out += [k, v, "="]
    return out


def _maybe_json(rest: str) -> tuple[list[str], bool]:
    try:
        return parse_json_array(rest), True
    except _NotStrings:
        raise _ArgError(NOT_STRING_ARRAY) from None
    except _NotJSON:
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
        except _NotStrings:
            raise _ArgError(NOT_STRING_ARRAY) from None
        except _NotJSON:
            return _split_ws(rest), False
    if rule == "name_or_name_val":
        return parse_words(rest, escape), False
    if rule == "name_val":
        return _name_val(rest, "LABEL" if keyword == "label" else "ENV", escape), False
    if rule == "health":
        sep = 0
        while sep < len(rest) and rest[sep] not in _SPACE:
            sep += 1
        if sep == 0:
            return [], False
        nxt = sep
        while nxt < len(rest) and rest[nxt] in _SPACE:
            nxt += 1
        typ = rest[:sep]
        tail = rest[nxt:]
        if tail == "":
            return [typ], False
        vals, is_json = _maybe_json(tail)
        return [typ] + vals, is_json
    raise AssertionError(rule)


# -- keyword and flags ----------------------------------------------------------------------


def extract_flags(line: str, base: int, escape: str) -> tuple[int, list[FlagWord]]:
    """BuildKit ``extractBuilderFlags``: leading ``--words`` (quotes and escapes removed) and the
    offset in ``line`` where the arguments begin (``len(line)`` if there are none)."""
    words: list[FlagWord] = []
    n = len(line)
    i = 0
    while True:
        while i < n and line[i] in _SPACE:
            i += 1
        if i >= n:
            return n, words
        if not line.startswith("--", i):
            return i, words
        start = i
        m = _PLAIN_WORD.match(line, i)
        end = m.end()
        if (end == n or line[end] in _SPACE) and escape not in line[i:end]:
            # no quote and no escape in this word: it is taken as it stands
            word = line[i:end]
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
            ch = line[i]
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
                    ch = line[i]
                buf.append(ch)
                pos.append(base + i)
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
                ch = line[i]
            buf.append(ch)
            pos.append(base + i)
            i += 1
        word = "".join(buf)
        if word == "--":
            return i, words
        if blank_ok or word:
            words.append(FlagWord(word, base + start, base + i, tuple(pos)))


def heredocs_in(line: str) -> list[HeredocBody]:
    """The ``<<NAME`` words of a RUN/COPY/ADD line (BuildKit ``heredocsFromLine``)."""
    lex = Expander("\\", raw_quotes=True, raw_escapes=True, skip_unset_env=True)
    try:
        words = lex.words(line)
    except ExpandError:
        return []
    docs: list[HeredocBody] = []
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        m = _HEREDOC_WORD.match(word)
        if not m:
            continue
        fd, chomp, rest = m.group(1), m.group(2) == "-", m.group(3)
        if rest == "" and _HEREDOC_OP.match(word) and i < len(words):
            rest = words[i]  # "<<  EOF": whitespace after the operator (BuildKit >= 0.22)
            if "<" in rest:
                continue
            i += 1
        if not rest:
            continue
        doc = _heredoc_from(fd, chomp, rest)
        if doc is not None:
            docs.append(doc)
    return docs


def _heredoc_from(fd: str, chomp: bool, rest: str) -> HeredocBody | None:
    plain = Expander("\\", skip_unset_env=True)
    raw = Expander("\\", raw_quotes=True, skip_unset_env=True)
    try:
        words = plain.words(rest)
        if len(words) != 1:
            return None
        raw_words = raw.words(rest)
    except ExpandError:
        return None
    if len(raw_words) != 1:
        return None
    word, word_raw = words[0], raw_words[0]
    quotes = word.count("'") + word.count('"')
    quotes_raw = word_raw.count("'") + word_raw.count('"')
    return HeredocBody(
        name=word, file_descriptor=int(fd or 0), expand=quotes == quotes_raw, chomp=chomp
    )


# -- nodes ----------------------------------------------------------------------------------


def _node_from(text: str, base: int, ll: LogicalLine, escape: str, src: LineSource) -> Node:
    """``newNodeFromLine`` on ``text`` (which starts at ``base`` in ``ll.text``)."""
    stripped = text.lstrip(GO_SPACE)
    lead = len(text) - len(stripped)
    trimmed = stripped.rstrip(GO_SPACE)
    cmd_offset = base + lead
    flags: list[FlagWord] = []
    rest = ""
    args_offset = cmd_offset + len(trimmed)
    m = _TOKEN_WS.search(trimmed)
    if m is None:
        cmd = trimmed
    else:
        cmd, after = trimmed[: m.start()], m.end()
        tail = trimmed[after:]
        offset, flags = extract_flags(tail, cmd_offset + after, escape)
        rest_raw = tail[offset:]
        rest = rest_raw.strip(GO_SPACE)
        args_offset = cmd_offset + after + offset + (len(rest_raw) - len(rest_raw.lstrip(GO_SPACE)))
    keyword = cmd.lower()
    sub = None
    json_form = False
    if keyword == "onbuild":
        values: list[str] = []
        if rest:
            sub = _node_from(rest, args_offset, ll, escape, src)
    else:
        try:
            values, json_form = apply_rule(keyword, rest, escape)
        except _ArgError as e:
            line, col = ll.position(args_offset + e.offset)
            raise SourceError(e.message, src.span(line, col)) from None
    return Node(
        cmd=cmd, flags=flags, values=values, json=json_form, original=text, line=ll,
        args_offset=args_offset, cmd_offset=cmd_offset, rest=rest, sub=sub,
    )


def _wants_heredocs(text: str, scanner: Scanner) -> list[HeredocBody]:
    trimmed = text.strip(GO_SPACE)
    parts = _TOKEN_WS.split(trimmed, maxsplit=1)
    keyword = parts[0].lower()
    if keyword == "onbuild" and len(parts) == 2:
        offset, _ = extract_flags(parts[1], 0, scanner.escape)
        sub = parts[1][offset:].strip(GO_SPACE)
        parts = _TOKEN_WS.split(sub, maxsplit=1)
        keyword = parts[0].lower()
        text = sub
    if keyword not in HEREDOC_KEYWORDS or len(parts) < 2:
        return []
    offset, _ = extract_flags(parts[1], 0, scanner.escape)
    rest = parts[1][offset:].strip(GO_SPACE)
    if rest.startswith("["):
        try:
            parse_json_array(rest)
            return []  # exec form never carries heredocs
        except (_NotJSON, _NotStrings):
            pass
    return heredocs_in(text)


def parse_syntax(text: str, filename: str = "Dockerfile") -> SyntaxTree:
    """Run the syntax layer over ``text``.  Raises :class:`SourceError` where BuildKit's
    ``parser.Parse`` fails (bad directive, unterminated heredoc, ENV without value, JSON array of
    non-strings, no instructions at all)."""
    src = LineSource(text, filename)
    scanner = Scanner(src, _wants_heredocs)
    nodes: list[Node] = []
    empties: list[tuple[int, int]] = []
    for ll in scanner:
        node = _node_from(ll.text, 0, ll, scanner.escape, src)
        node.heredocs = ll.heredocs
        if ll.heredocs:
            node.original = ll.text + "".join("\n" + h.content + h.name for h in ll.heredocs) + "\n"
        for line in ll.empty_continuation_lines:
            empties.append((len(nodes), line))
        nodes.append(node)
    if not nodes:
        last = max(len(src.raw), 1)
        raise SourceError("file with no instructions", Span(filename, last, 1, last, 0, src.display(last)))
    return SyntaxTree(filename, scanner.directives, nodes, scanner.escape, src, empties)
