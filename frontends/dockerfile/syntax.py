"""The syntax layer: logical lines → untyped instruction nodes, exactly as BuildKit's parser.

This is the stage that BuildKit calls ``parser.Parse`` (``parser.go`` + ``line_parsers.go`` +
``split_command.go``): it splits the keyword and the leading ``--flags`` off a line and reads the
arguments with the rule of that keyword (JSON-or-shell, whitespace list, ``k=v`` pairs, …; the
rules live in :mod:`.arguments`).  It accepts unknown keywords and does not look inside flags;
:mod:`.typed` does that.

Its output, :class:`SyntaxTree`, is what the differential tests compare with the reference parser
(``to_oracle_json``) and with BuildKit's ``Node.Dump()`` golden files (``dump``).

Where BuildKit v0.12.5 (the oracle) and current BuildKit differ we follow current BuildKit:
ENV/LABEL keep their separator, JSON followed by more text is shell form, ``<<  EOF`` with spaces is
a heredoc, flags use the file's escape character, and ``# check=`` is a directive.
"""

from __future__ import annotations
import gc
from dataclasses import dataclass, field

from frontends.common.expand import GO_SPACE
from frontends.common.gostrings import go_quote
from frontends.dockerfile.arguments import (
    TOKEN_WS, ArgError, FlagWord, NotJSON, NotStrings, apply_rule, extract_flags, parse_json_array,
)
from frontends.dockerfile.heredocs import HEREDOC_KEYWORDS, heredocs_in
from frontends.dockerfile.scanner import Directive, HeredocBody, LineSource, LogicalLine, Scanner
from frontends.errors import SourceError, Span


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
    m = TOKEN_WS.search(trimmed)
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
        except ArgError as e:
            line, col = ll.position(args_offset + e.offset)
            raise SourceError(e.message, src.span(line, col)) from None
    return Node(
        cmd=cmd, flags=flags, values=values, json=json_form, original=text, line=ll,
        args_offset=args_offset, cmd_offset=cmd_offset, rest=rest, sub=sub,
    )


def _wants_heredocs(text: str, scanner: Scanner) -> list[HeredocBody]:
    trimmed = text.strip(GO_SPACE)
    parts = TOKEN_WS.split(trimmed, maxsplit=1)
    keyword = parts[0].lower()
    if keyword == "onbuild" and len(parts) == 2:
        offset, _ = extract_flags(parts[1], 0, scanner.escape)
        sub = parts[1][offset:].strip(GO_SPACE)
        parts = TOKEN_WS.split(sub, maxsplit=1)
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
        except (NotJSON, NotStrings):
            pass
    return heredocs_in(text)


def parse_syntax(text: str, filename: str = "Dockerfile") -> SyntaxTree:
    """Run the syntax layer over ``text``.  Raises :class:`SourceError` where BuildKit's
    ``parser.Parse`` fails (bad directive, unterminated heredoc, ENV without value, JSON array of
    non-strings, no instructions at all).  The cyclic garbage collector is paused meanwhile: the
    parse makes many small acyclic objects, and collecting while they are made costs about a third
    of the time."""
    with gc_paused():
        return _parse_syntax(text, filename)


class gc_paused:
    """Context manager: pause the cyclic GC (re-entrant; restores the previous state)."""

    def __enter__(self) -> None:
        self.was = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self.was:
            gc.enable()


def _parse_syntax(text: str, filename: str = "Dockerfile") -> SyntaxTree:
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
