"""Parse a Dockerfile: the public entry point of the Dockerfile parser.

Stable API (used by the IR compiler, ``convert.py``)::

    from frontends.dockerfile.parse import parse_dockerfile
    df = parse_dockerfile(text, filename="Dockerfile")
    df.directives      # {"syntax": "docker/dockerfile:1", "escape": "\\\\", "check": ...} as written
    df.escape          # the escape character in force ("\\\\" or "`")
    df.instructions    # [From, Arg, Run, Copy, ...] typed (frontends.dockerfile.instructions)
    df.meta_args       # the ARGs before the first FROM
    df.stages          # [Stage(from_=From, instructions=[...]), ...]
    df.warnings        # [SourceWarning(rule, message, span, url)], BuildKit build checks
    df.check           # CheckConfig from "# check=skip=...;error=true" (error: fail on warnings)
    df.to_oracle_json()  # {"instructions": [...]}, the reference parser's JSON conventions
    df.dump()          # BuildKit's Node.Dump() text
    parse_file(path)   # the same from a file (UTF-8, BOM ignored; bad UTF-8 is a SourceError)
    parse_syntax(text) # only BuildKit's parser stage: untyped nodes, unknown keywords accepted

Every instruction has ``.span`` (file, line, column, end line).  Bad input raises
:class:`frontends.errors.SourceError`, whose ``format()`` gives ``Dockerfile:12:5: message``, the
line and a caret.  Related modules: :mod:`frontends.common.expand` (variables),
:mod:`frontends.common.mounts` (``MountSpec``), :mod:`.dockerignore`.

Pipeline: :mod:`.scanner` (lines, continuations, directives, heredocs) → :mod:`.syntax` (BuildKit's
``parser.Parse``: keyword, flags and the argument rules of :mod:`.arguments`) → :mod:`.typed`
(BuildKit's ``instructions``: typed values, flag checks, :mod:`frontends.common.mounts`) → :mod:`.checks` (lint
warnings).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from frontends.dockerfile import instructions as I
from frontends.dockerfile.checks import CheckConfig, run_checks
from frontends.dockerfile.syntax import SyntaxTree, gc_paused, parse_syntax
from frontends.dockerfile.typed import Builder
from frontends.errors import SourceError, SourceWarning, Span
from frontends.files import read_context_file

__all__ = ["Dockerfile", "parse_dockerfile", "parse_file", "parse_syntax", "SourceError", "SourceWarning"]


@dataclass
class Dockerfile:
    """A parsed Dockerfile (see the module docstring)."""

    filename: str
    directives: dict[str, str]
    escape: str
    instructions: list[I.Instruction]
    warnings: list[SourceWarning]
    syntax: SyntaxTree = field(repr=False)
    check: CheckConfig = field(default_factory=CheckConfig)

    @property
    def meta_args(self) -> list[I.Arg]:
        out = []
        for ins in self.instructions:
            if isinstance(ins, I.From):
                break
            if isinstance(ins, I.Arg):
                out.append(ins)
        return out

    @property
    def stages(self) -> list[I.Stage]:
        stages: list[I.Stage] = []
        for ins in self.instructions:
            if isinstance(ins, I.From):
                stages.append(I.Stage(ins))
            elif stages:
                stages[-1].instructions.append(ins)
        return stages

    def to_oracle_json(self) -> dict:
        """The parse in the reference parser's JSON form (see ``shared/corpus/README.md``)."""
        return self.syntax.to_oracle_json()

    def dump(self) -> str:
        return self.syntax.dump()


def parse_dockerfile(text: str, filename: str = "Dockerfile") -> Dockerfile:
    """Parse and type-check ``text``.  Raises :class:`SourceError` on the first error."""
    with gc_paused():
        return _parse_dockerfile(text, filename)


def _parse_dockerfile(text: str, filename: str) -> Dockerfile:
    tree = parse_syntax(text, filename)
    builder = Builder(tree)
    instrs = [builder.build(node) for node in tree.nodes]
    first_non_arg = next((i for i in instrs if not isinstance(i, I.Arg)), None)
    if first_non_arg is not None and not isinstance(first_non_arg, I.From):
        raise SourceError("no build stage in current context: the first instruction other than "
                          "ARG must be FROM", first_non_arg.span)
    directives = {d.name: d.value for d in tree.directives}
    check = CheckConfig.parse(directives.get("check"))
    warnings = run_checks(tree, instrs, check)
    return Dockerfile(filename, directives, tree.escape, instrs, warnings, tree, check)


def parse_file(path: str, display_name: str | None = None) -> Dockerfile:
    """Read ``path`` as UTF-8 (a leading BOM is ignored) and parse it; at most
    ``frontends.files.MAX_SIZE`` bytes (a larger file is a ``FileError``)."""
    raw = read_context_file(path, None, "Dockerfile")
    name = display_name or path
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise SourceError(f"invalid UTF-8 (byte 0x{raw[e.start]:02x})", Span(name, line, col)) from None
    return parse_dockerfile(text, name)
