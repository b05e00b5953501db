"""Typed Dockerfile instructions: one frozen struct per keyword, each with its exact place.

These are what the IR compiler consumes.  Values are *as written* (variables not yet expanded:
``FROM ${BASE}`` keeps ``${BASE}``) because expansion depends on build arguments and the base
image's environment, which only the compiler knows; :mod:`frontends.common.expand` does it then.

Every instruction has

* ``keyword`` – the keyword as spelled in the file (``CoPy``), ``span`` – file, first line, column
  of the keyword, last line (heredoc terminators included);
* ``flags`` – the ``--name[=value]`` words, each with its own span;
* ``original`` – BuildKit's joined source text of the instruction.

Shell-or-exec commands (RUN, CMD, ENTRYPOINT, HEALTHCHECK CMD) are a :class:`CommandLine`: the
argument list and whether a shell must be prepended (shell form).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from frontends.common.mounts import MountSpec
from frontends.errors import Span


class Flag(msgspec.Struct, frozen=True):
    """A ``--name[=value]`` word; ``value`` is None for a bare boolean flag."""

    name: str
    value: str | None
    span: Span


class Heredoc(msgspec.Struct, frozen=True):
    """A here-document: ``<<[-]NAME`` and its body (raw, final newline kept, tabs not stripped).

    ``expand`` is False when any part of the delimiter was quoted (``<<'EOF'``): the body is then
    not subject to variable expansion.  ``chomp`` is True for ``<<-``; :meth:`text` applies it."""

    name: str
    content: str
    file_descriptor: int = 0
    expand: bool = True
    chomp: bool = False
    span: Span | None = None

    def text(self) -> str:
        if not self.chomp:
            return self.content
        return "".join(line.lstrip("\t") for line in self.content.splitlines(keepends=True))


class CommandLine(msgspec.Struct, frozen=True):
    """``RUN``/``CMD``/``ENTRYPOINT`` arguments: exec form (``shell_form`` False) is the argv;
    shell form is one string to be run by the stage's SHELL."""

    args: tuple[str, ...]
    shell_form: bool

    @property
    def text(self) -> str:
        return " ".join(self.args)


class KeyValue(msgspec.Struct, frozen=True):
    """An ENV or LABEL pair.  ``legacy`` marks the ``ENV key value`` (space-separated) form.
    Key and value are as written: quotes and escapes are removed when expanded."""

    key: str
    value: str
    legacy: bool = False


class ArgDecl(msgspec.Struct, frozen=True):
    """``ARG name[=default]``; ``default`` None means no default."""

    name: str
    default: str | None = None


class Instruction(msgspec.Struct, frozen=True):
    keyword: str
    span: Span
    original: str
    flags: tuple[Flag, ...] = ()
    heredocs: tuple[Heredoc, ...] = ()

    @property
    def name(self) -> str:
        """The canonical upper-case keyword (``COPY``)."""
        return type(self).KEYWORD  # type: ignore[attr-defined]

    def flag(self, name: str) -> Flag | None:
        """The last flag with that name (BuildKit: the last one wins / duplicates rejected)."""
        for f in reversed(self.flags):
            if f.name == name:
                return f
        return None


class From(Instruction):
    KEYWORD = "FROM"
    image: str = ""
    stage_name: str | None = None  # lower-cased, as BuildKit stores it
    stage_name_as_written: str | None = None
    platform: str | None = None


class Run(Instruction):
    KEYWORD = "RUN"
    command: CommandLine = CommandLine((), True)
    mounts: tuple[MountSpec, ...] = ()
    network: str | None = None  # default | none | host
    security: str | None = None  # sandbox | insecure
    devices: tuple[str, ...] = ()  # --device=name[,required] (CDI devices), as written


class Cmd(Instruction):
    KEYWORD = "CMD"
    command: CommandLine = CommandLine((), True)


class Entrypoint(Instruction):
    KEYWORD = "ENTRYPOINT"
    command: CommandLine = CommandLine((), True)


class Shell(Instruction):
    KEYWORD = "SHELL"
    shell: tuple[str, ...] = ()


class Label(Instruction):
    KEYWORD = "LABEL"
    pairs: tuple[KeyValue, ...] = ()


class Env(Instruction):
    KEYWORD = "ENV"
    pairs: tuple[KeyValue, ...] = ()


class Maintainer(Instruction):
    KEYWORD = "MAINTAINER"
    maintainer: str = ""


class Expose(Instruction):
    KEYWORD = "EXPOSE"
    ports: tuple[str, ...] = ()  # as written: "80", "53/udp", "${PORT}", "8000-8010"


class SourceContent(msgspec.Struct, frozen=True):
    """A COPY/ADD source given inline as a heredoc (``COPY <<EOF /dst``)."""

    path: str
    data: str
    expand: bool


class FileOp(Instruction):
    """Common shape of COPY and ADD."""

    sources: tuple[str, ...] = ()
    contents: tuple[SourceContent, ...] = ()
    dest: str = ""
    json_form: bool = False
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    exclude: tuple[str, ...] = ()


class Copy(FileOp):
    KEYWORD = "COPY"
    from_: str | None = None
    parents: bool = False


class Add(FileOp):
    KEYWORD = "ADD"
    checksum: str | None = None
    keep_git_dir: bool = False
    unpack: bool | None = None  # None: BuildKit decides (local archives are unpacked)


class Volume(Instruction):
    KEYWORD = "VOLUME"
    paths: tuple[str, ...] = ()


class User(Instruction):
    KEYWORD = "USER"
    user: str = ""


class Workdir(Instruction):
    KEYWORD = "WORKDIR"
    path: str = ""


class Arg(Instruction):
    KEYWORD = "ARG"
    args: tuple[ArgDecl, ...] = ()


class Onbuild(Instruction):
    KEYWORD = "ONBUILD"
    expression: str = ""  # the trigger's source text, stored in the image config
    trigger: Instruction | None = None


class StopSignal(Instruction):
    KEYWORD = "STOPSIGNAL"
    signal: str = ""


class Healthcheck(Instruction):
    """``HEALTHCHECK NONE`` has ``test == ("NONE",)``; otherwise ``("CMD", argv...)`` or
    ``("CMD-SHELL", command)`` as in the image config.  Durations are in seconds (0 = unset)."""

    KEYWORD = "HEALTHCHECK"
    test: tuple[str, ...] = ()
    interval: float = 0.0
    timeout: float = 0.0
    start_period: float = 0.0
    start_interval: float = 0.0
    retries: int = 0

    @property
    def disabled(self) -> bool:
        return self.test == ("NONE",)


INSTRUCTION_TYPES: dict[str, type[Instruction]] = {
    cls.KEYWORD: cls  # type: ignore[attr-defined]
    for cls in (From, Run, Cmd, Entrypoint, Shell, Label, Env, Maintainer, Expose, Copy, Add,
                Volume, User, Workdir, Arg, Onbuild, StopSignal, Healthcheck)
}

KEYWORDS: tuple[str, ...] = tuple(sorted(INSTRUCTION_TYPES))


@dataclass
class Stage:
    """A build stage: its FROM and the instructions up to the next FROM."""

    from_: From
    instructions: list[Instruction] = field(default_factory=list)

    @property
    def name(self) -> str | None:
        return self.from_.stage_name
