"""The stage plan of a Dockerfile: global ARGs, each FROM expanded, stage references, the target.

This is the part of BuildKit's ``toDispatchState`` that runs before any instruction is lowered:
the ARGs before the first FROM (with the predefined platform args and the user's build args) are
evaluated, every ``FROM`` is expanded with them, stage names are indexed, the stages each stage
reads (``COPY --from``, ``RUN --mount from=``) are collected, circular references are refused with
the instructions that form the loop, and the target stage is chosen.  Nothing is resolved here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from frontends import BuildRequest, NamedContext
from frontends.common.errors import ExpandError
from frontends.common.expand import Expander
from frontends.common.platforms import parse_platform, predefined_args
from frontends.dockerfile import instructions as I
from frontends.errors import FrontendError, SourceError, Span, did_you_mean
from ir import ops


class DockerfileError(SourceError):
    """A located compile error; ``str()`` is the whole message: ``file:line:col: msg``, the line, a caret.

    It is both the parser's :class:`frontends.errors.SourceError` and the contract's
    :class:`frontends.FrontendError`, so either ``except`` catches it."""

    def __str__(self) -> str:
        return self.format()


class TargetNotFound(FrontendError):
    """``--target`` names no stage of the file."""


@dataclass(eq=False)
class StageInfo:
    """One FROM and its instructions, with everything known before lowering."""

    index: int
    from_: I.From
    instructions: list[I.Instruction]
    base_name: str  # FROM's image expanded with the global args
    platform: ops.Platform
    base: "StageInfo | None" = None  # FROM <an earlier stage>
    context: NamedContext | None = None  # the stage is replaced by --build-context NAME=...
    deps: dict["StageInfo", Span] = field(default_factory=dict)  # stage read -> where
    display: str = ""  # the name used in progress descriptions ("" for a lone stage)

    @property
    def name(self) -> str:
        return self.from_.stage_name or ""

    @property
    def group(self) -> str:
        return self.name or f"stage-{self.index}"


@dataclass
class Plan:
    stages: list[StageInfo]
    by_name: dict[str, StageInfo]
    global_args: dict[str, str]
    target: StageInfo
    external_refs: set[str]


def stage_ref(value: str, plan_stages: list[StageInfo], by_name: dict[str, StageInfo], span: Span) -> StageInfo | None:
    """The stage ``--from=value`` names (by name or index), or None for an image / named context."""
    if value.lstrip("-").isdigit():
        idx = int(value)
        if not 0 <= idx < len(plan_stages):
            raise DockerfileError(f"invalid stage index {idx}", span)
        return plan_stages[idx]
    return by_name.get(value.lower())


def build_plan(instrs: list[I.Instruction], stages: list[I.Stage], request: BuildRequest,
               expander: Expander) -> Plan:
    target_name = request.target or (stages[-1].name or "")
    glob = predefined_args(request, target_name)
    for ins in instrs:
        if isinstance(ins, I.From):
            break
        if isinstance(ins, I.Arg):
            for decl in ins.args:
                if decl.name in request.build_args:
                    glob[decl.name] = request.build_args[decl.name]
                elif decl.default is not None:
                    glob[decl.name] = _expand(expander, decl.default, glob, ins.span)

    infos: list[StageInfo] = []
    by_name: dict[str, StageInfo] = {}
    for i, st in enumerate(stages):
        f = st.from_
        base_name = _expand(expander, f.image, glob, f.span)
        if not base_name:
            raise DockerfileError(f"base name ({f.image}) should not be blank", f.span)
        platform = request.platform
        if f.platform:
            text = _expand(expander, f.platform, glob, f.flag("platform").span if f.flag("platform") else f.span)
            span = f.flag("platform").span if f.flag("platform") else f.span
            if not text:
                raise DockerfileError(f"empty platform value from expression {f.platform}", span)
            try:
                platform = parse_platform(text)
            except ValueError as e:
                raise DockerfileError(f"failed to parse platform {f.platform}: {e}", span) from None
        info = StageInfo(i, f, st.instructions, base_name, platform)
        info.base = by_name.get(base_name)  # BuildKit: exact match, stages defined earlier only
        if info.name and info.name in request.contexts:
            info.context = request.contexts[info.name]
            info.base = None
        infos.append(info)
        if info.name:
            by_name[info.name] = info

    external: set[str] = set()
    for info in infos:
        for ins in info.instructions:
            for value, span in references(ins):
                dep = stage_ref(value, infos, by_name, span)
                if dep is None:
                    external.add(value)
                else:
                    info.deps.setdefault(dep, span)
    _check_cycles(infos)

    single = len(infos) + len(external) == 1
    for info in infos:
        info.display = "" if single else info.group

    if request.target:
        target = by_name.get(request.target.lower())
        if target is None:
            names = [s.name for s in infos if s.name]
            raise TargetNotFound(f'target stage "{request.target}" could not be found'
                                 + did_you_mean(request.target, names))
    else:
        target = infos[-1]
    return Plan(infos, by_name, glob, target, external)


def references(ins: I.Instruction) -> list[tuple[str, Span]]:
    """Stage or image names an instruction reads from: ``COPY --from``, ``RUN --mount from=``."""
    out = []
    if isinstance(ins, I.Copy) and ins.from_:
        flag = ins.flag("from")
        out.append((ins.from_, flag.span if flag else ins.span))
    elif isinstance(ins, I.Run):
        mount_flags = [f for f in ins.flags if f.name == "mount"]
        for n, m in enumerate(ins.mounts):
            if m.from_ and m.type != "tmpfs":
                span = mount_flags[n].span if n < len(mount_flags) else ins.span
                out.append((m.from_, span))
    return out


def _check_cycles(infos: list[StageInfo]) -> None:
    """BuildKit ``validateCircularDependency``: a stage reading itself, directly or through others."""
    visited: set[int] = set()

    def visit(s: StageInfo, path: list[StageInfo], via: list[Span]) -> list[Span] | None:
        if s.index in visited:
            return None
        visited.add(s.index)
        path.append(s)
        for dep, where in s.deps.items():
            if dep in path:
                return via + [where]
            found = visit(dep, path, via + [where])
            if found is not None:
                return found
        path.pop()
        return None

    for s in infos:
        loop = visit(s, [], [])
        if loop is not None:
            raise DockerfileError(f"circular dependency detected on stage: {s.group}", loop[-1])


def _expand(expander: Expander, text: str, env: dict[str, str], span: Span) -> str:
    try:
        return expander.word(text, env)
    except ExpandError as e:
        raise DockerfileError(str(e), span) from None
