"""BuildKit's build checks (``docker build --check``) as non-fatal, located warnings.

Only the rules that can be decided from the Dockerfile alone are here (rules that need the base
image's config or the build context, such as UndefinedVar or CopyIgnoredFile, belong to the
compiler).  Rule names, messages and the ``# check=skip=A,B;error=true`` directive follow
``frontend/dockerfile/linter``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from frontends.common.errors import ExpandError
from frontends.common.expand import Expander
from frontends.dockerfile import instructions as I
from frontends.dockerfile.syntax import SyntaxTree
from frontends.errors import SourceWarning, Span

URL = "https://docs.docker.com/go/dockerfile/rule/{}/"

_SECRET = re.compile(
    r"(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)(?:_|$)",
    re.I,
)
_ALLOWED = re.compile(r"(?:_|^)(?:public)(?:_|$)", re.I)
_PLATFORM_ARGS = {"TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT", "BUILDPLATFORM",
                  "BUILDOS", "BUILDARCH", "BUILDVARIANT"}
_RESERVED_STAGES = ("scratch", "context")


@dataclass(frozen=True)
class CheckConfig:
    """The ``# check=`` directive: rules to skip (``all`` skips every rule) and ``error=true``."""

    skip: frozenset[str] = frozenset()
    error: bool = False

    @classmethod
    def parse(cls, value: str | None) -> "CheckConfig":
        skip: set[str] = set()
        error = False
        for part in (value or "").split(";"):
            k, _, v = part.strip().partition("=")
            if k.strip().lower() == "skip":
                skip |= {x.strip().lower() for x in v.split(",") if x.strip()}
            elif k.strip().lower() == "error":
                error = v.strip().lower() == "true"
        return cls(frozenset(skip), error)

    def enabled(self, rule: str) -> bool:
        return "all" not in self.skip and rule.lower() not in self.skip


@lru_cache(maxsize=None)
def rule_url(rule: str) -> str:
    """The rule's page: its name in kebab case, an acronym one word (``JSONArgsRecommended``:
    ``json-args-recommended``, as docs.docker.com spells it)."""
    return URL.format(re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", rule).lower())


def is_secret_name(name: str) -> bool:
    return bool(_SECRET.search(name)) and not _ALLOWED.search(name)


class _Linter:
    def __init__(self, tree: SyntaxTree, config: CheckConfig) -> None:
        self.tree = tree
        self.config = config
        self.out: list[SourceWarning] = []

    def warn(self, rule: str, message: str, span: Span) -> None:
        if self.config.enabled(rule):
            self.out.append(SourceWarning(rule, message, span, rule_url(rule)))

    def run(self, instrs: list[I.Instruction]) -> list[SourceWarning]:
        self._casing(instrs)
        for idx, line in self.tree.empty_continuations:
            self.warn("NoEmptyContinuation", "Empty continuation line",
                      self.tree.source.span(line))
        meta_args: set[str] = set()
        stage_names: dict[str, I.From] = {}
        seen_from = False
        stage_has: dict[str, I.Instruction] = {}
        abs_workdir = False
        for ins in instrs:
            if isinstance(ins, I.From):
                seen_from = True
                stage_has = {}
                abs_workdir = False
                self._from(ins, meta_args, stage_names)
                continue
            if isinstance(ins, I.Arg):
                if not seen_from:
                    meta_args |= {a.name for a in ins.args}
                for a in ins.args:
                    if is_secret_name(a.name):
                        self.warn("SecretsUsedInArgOrEnv", "Do not use ARG or ENV instructions for "
                                  f'sensitive data (ARG "{a.name}")', ins.span)
            elif isinstance(ins, I.Env):
                for kv in ins.pairs:
                    if is_secret_name(kv.key):
                        self.warn("SecretsUsedInArgOrEnv", "Do not use ARG or ENV instructions for "
                                  f'sensitive data (ENV "{kv.key}")', ins.span)
            if isinstance(ins, (I.Env, I.Label)) and any(kv.legacy for kv in ins.pairs):
                kw = ins.name
                self.warn("LegacyKeyValueFormat", f'"{kw} key=value" should be used instead of '
                          f'legacy "{kw} key value" format', ins.span)
            elif isinstance(ins, I.Maintainer):
                self.warn("MaintainerDeprecated",
                          "Maintainer instruction is deprecated in favor of using label", ins.span)
            elif isinstance(ins, (I.Cmd, I.Entrypoint)):
                if ins.command.shell_form and "SHELL" not in stage_has:
                    self.warn("JSONArgsRecommended", f"JSON arguments recommended for {ins.name} to "
                              "prevent unintended behavior related to OS signals", ins.span)
            elif isinstance(ins, I.Workdir):
                path = ins.path.strip("'\"")
                if path.startswith("/") or path.startswith("$") or re.match(r"^[A-Za-z]:", path):
                    abs_workdir = True
                elif not abs_workdir:
                    self.warn("WorkdirRelativePath", f'Relative workdir "{ins.path}" can have '
                              "unexpected results if the base image changes", ins.span)
            elif isinstance(ins, I.Expose):
                self._expose(ins)
            if isinstance(ins, (I.Cmd, I.Entrypoint, I.Healthcheck)) and ins.name in stage_has:
                prev = stage_has[ins.name]
                self.warn("MultipleInstructionsDisallowed", f"Multiple {ins.name} instructions "
                          "should not be used in the same stage because only the last one will "
                          "be used", prev.span)
            stage_has[ins.name] = ins
        return self.out

    def _casing(self, instrs: list[I.Instruction]) -> None:
        words = [i.keyword for i in instrs] + [
            i.trigger.keyword for i in instrs if isinstance(i, I.Onbuild) and i.trigger
        ]
        upper = sum(1 for w in words if w == w.upper())
        lower = sum(1 for w in words if w == w.lower())
        majority = "lowercase" if lower > upper else "uppercase"
        for ins in instrs:
            w = ins.keyword
            if (majority == "uppercase" and w != w.upper()) or (majority == "lowercase" and w != w.lower()):
                self.warn("ConsistentInstructionCasing", f"Command '{w}' should match the case of "
                          f"the command majority ({majority})", ins.span)

    @staticmethod
    def _word_span(ins: I.Instruction, word: str, last: bool = True) -> Span:
        """The span of ``word`` on the instruction's first line, or the instruction's span."""
        line = ins.span.source_line or ""
        found = [m.start() for m in re.finditer(rf"(?<!\S){re.escape(word)}(?!\S)", line)
                 if m.start() >= ins.span.column - 1]
        if not found:
            return ins.span
        col = (found[-1] if last else found[0]) + 1
        return Span(ins.span.file, ins.span.line, col, ins.span.line, col + len(word), line)

    def _from(self, ins: I.From, meta_args: set[str], stages: dict[str, I.From]) -> None:
        if ins.stage_name_as_written:
            written = ins.stage_name_as_written
            if written != written.lower():
                self.warn("StageNameCasing", f"Stage name '{written}' should be lowercase",
                          self._word_span(ins, written))
            as_word = ins.original.split()[-2] if len(ins.original.split()) >= 2 else "AS"
            kw = ins.keyword
            if (kw == kw.lower()) != (as_word == as_word.lower()):
                self.warn("FromAsCasing", f"'{as_word}' and '{kw}' keywords' casing do not match",
                          self._word_span(ins, as_word))
            name = ins.stage_name
            if name in _RESERVED_STAGES:
                self.warn("ReservedStageName", "Stage name should not use the same name as "
                          f'reserved stage "{name}"', ins.span)
            if name in stages:
                self.warn("DuplicateStageName", f'Duplicate stage name "{name}", stage names should '
                          "be unique", ins.span)
            stages[name] = ins
        if ins.platform:
            if ins.platform in ("$TARGETPLATFORM", "${TARGETPLATFORM}"):
                self.warn("RedundantTargetPlatform", "Setting platform to predefined "
                          f"{ins.platform} in FROM is redundant as this is the default behavior",
                          ins.span)
            elif "$" not in ins.platform:
                self.warn("FromPlatformFlagConstDisallowed", "FROM --platform flag should not use "
                          f'constant value "{ins.platform}"', ins.span)
        known = meta_args | _PLATFORM_ARGS
        for text in (ins.image, ins.platform or ""):
            try:
                unmatched = Expander(self.tree.escape).expand(text, {k: "" for k in known}).unmatched
            except ExpandError:
                continue
            for name in sorted(unmatched):
                if name.lower() not in stages:
                    self.warn("UndefinedArgInFrom", f"FROM argument '{name}' is not declared", ins.span)

    def _expose(self, ins: I.Expose) -> None:
        for port in ins.ports:
            if ":" in port:
                self.warn("ExposeInvalidFormat", "EXPOSE instruction should not define an IP "
                          f"address or host-port mapping, found '{port}'", ins.span)
            _, slash, proto = port.partition("/")
            if slash and proto != proto.lower():
                self.warn("ExposeProtoCasing", f"Defined protocol '{port}' in EXPOSE instruction "
                          "should be lowercase", ins.span)


def run_checks(tree: SyntaxTree, instrs: list[I.Instruction], config: CheckConfig) -> list[SourceWarning]:
    """All warnings for a parsed file, in source order."""
    out = _Linter(tree, config).run(instrs)
    return sorted(out, key=lambda w: (w.span.line, w.span.column))
