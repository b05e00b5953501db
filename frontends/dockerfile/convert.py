"""Compile a parsed Dockerfile to an IR document (BuildKit's ``dockerfile2llb``).

    from frontends.dockerfile.convert import compile_dockerfile
    compiled = compile_dockerfile(request, resolver)   # -> frontends.Compiled

Each stage reachable from the target is lowered once, in dependency order, onto states of
:mod:`ir.builder`: its FROM becomes a source (a registry image pinned by digest, scratch, a named
context) or the state of an earlier stage; RUN becomes an exec op (:mod:`.convert_run`), COPY/ADD
a file op (:mod:`.convert_copy`), WORKDIR a mkdir; the metadata instructions edit the stage's
image config (:mod:`frontends.common.image_config`).  Every op carries a source-map entry (description, stage
group, Dockerfile lines) that is kept out of its digest.  Stages are independent subgraphs unless
one reads another, so the solver can run them in parallel.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import replace

from frontends import BuildRequest, Compiled, ImageResolver, NamedContext
from frontends.common import stage as S
from frontends.common.errors import ExpandError
from frontends.common.expand import Expander
from frontends.common.image_config import ImageState
from frontends.common.platforms import platform_string
from frontends.common.sources import familiar_names
from frontends.dockerfile import instructions as I
from frontends.dockerfile.checks import rule_url
from frontends.dockerfile.convert_config import ConfigInstructions
from frontends.dockerfile.convert_copy import dispatch_copy
from frontends.dockerfile.convert_run import dispatch_run
from frontends.dockerfile.dispatch import Dispatch, External
from frontends.dockerfile.dockerignore import ignore_matcher
from frontends.dockerfile.parse import parse_dockerfile
from frontends.dockerfile.stages import DockerfileError, Plan, StageInfo, build_plan, stage_ref
from frontends.dockerfile.syntax import parse_syntax
from frontends.dockerfile.typed import Builder
from frontends.errors import SourceError, SourceWarning, Span, did_you_mean
from ir import builder, ops

__all__ = ["compile_dockerfile", "DockerfileError"]

_GUARDED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?[-+?]")


class Converter(ConfigInstructions):
    def __init__(self, request: BuildRequest, resolver: ImageResolver) -> None:
        self.request = request
        self.resolver = resolver
        self.done: dict[int, Dispatch] = {}
        self.active: set[int] = set()
        self.externals: dict[tuple[str, ops.Platform], External] = {}
        self._context: builder.State | None = None
        self._ignore = None
        self.warnings: list[str] = []

    # -- entry ----------------------------------------------------------------------------
    def compile(self) -> Compiled:
        req = self.request
        try:
            text = req.source.decode("utf-8")
        except UnicodeDecodeError as e:
            line = req.source[: e.start].count(b"\n") + 1
            raise DockerfileError(f"invalid UTF-8 (byte 0x{req.source[e.start]:02x})", Span(req.filename, line)) from None
        if not text.strip():
            raise DockerfileError("the Dockerfile cannot be empty", Span(req.filename, 1))
        df = relocated(lambda: parse_dockerfile(text, req.filename))
        if not df.stages:
            raise DockerfileError("dockerfile contains no stages to build", Span(req.filename, 1))
        self.df = df
        self.expander = Expander(df.escape)
        self.plan: Plan = build_plan(df.instructions, df.stages, req, self.expander)
        self.found: list[SourceWarning] = list(df.warnings)
        d = self.ensure(self.plan.target)
        self.found.sort(key=lambda w: (w.span.line, w.span.column))
        if df.check.error and self.found:  # `# check=error=true`: BuildKit fails after lowering
            first = self.found[0]
            rules = ", ".join(sorted({w.rule for w in self.found}))
            raise DockerfileError(f"lint violation found for rules: {rules}: {first.message}", first.span)
        self.warnings.extend(f"{w.span.location()}: warning: {w.rule}: {w.message}" for w in self.found)
        S.override_labels(d, req.labels)
        final = d.state.with_image(d.image.to_ir(), d.image.history, d.platform,
                                   meta=ops.OpMetadata(f"exporting image config of {d.info.group}", d.info.group,
                                                       (self.location(d.info.from_.span),)))
        doc = builder.build_document({"default": final},
                                     sources=(ops.SourceFile(req.filename, "dockerfile", req.source),))
        return Compiled(doc, tuple(self.warnings), tuple(self.found))

    # -- helpers --------------------------------------------------------------------------
    def location(self, span: Span) -> ops.Location:
        return ops.Location(0, span.line, span.column, span.end_line if span.end_line != span.line else 0)

    def meta(self, d: Dispatch, text: str, span: Span, *, step: bool = True) -> ops.OpMetadata:
        """Description ``[stage 3/7] RUN make`` (BuildKit ``prefixCommand``), group, location."""
        return ops.OpMetadata(self.prefix(d, text) if step else text, d.info.group, (self.location(span),))

    def prefix(self, d: Dispatch, text: str) -> str:
        if d.cmd_total == 0:
            return text
        d.cmd_index += 1
        width = len(str(d.cmd_total))
        head = "[" + (d.info.display + " " if d.info.display else "")
        head += f"{d.cmd_index:>{width}}/{d.cmd_total}] "
        return head + ("ONBUILD " if d.on_build else "") + text

    def describe(self, d: Dispatch, ins: I.Instruction) -> str:
        """The instruction as progress shows it: first line, variables shown expanded, keyword upper."""
        first = ins.original.split("\n", 1)[0]
        try:
            first = Expander(self.df.escape, raw_quotes=True, skip_unset_env=True).word(first, d.env)
        except ExpandError:
            pass
        kw, sep, rest = first.partition(" ")
        return kw.upper() + sep + rest

    def warn(self, rule: str, message: str, span: Span) -> None:
        """A build-check warning found while lowering (BuildKit's rules that need more than the text)."""
        if self.df.check.enabled(rule) and not any(w.rule == rule and w.message == message and w.span == span
                                                   for w in self.found):
            self.found.append(SourceWarning(rule, message, span, rule_url(rule)))

    def word(self, d: Dispatch, text: str, span: Span) -> str:
        """Expand one word with the stage's environment; report variables used but never defined."""
        try:
            result = self.expander.expand(text, d.env)
        except ExpandError as e:
            raise DockerfileError(str(e), span) from None
        if result.unmatched:
            declared = {k for k, _ in d.build_args}
            guarded = set(_GUARDED.findall(text))  # ${V:-x} and friends handle an unset V themselves
            for name in sorted(result.unmatched - declared - guarded):
                self.warn("UndefinedVar", f"Usage of undefined variable '${name}'"
                          + did_you_mean(name, list(d.env), "$"), span)
        return result.result

    def words(self, d: Dispatch, text: str, span: Span) -> list[str]:
        try:
            return self.expander.words(text, d.env)
        except ExpandError as e:
            raise DockerfileError(str(e), span) from None

    def run_env(self, d: Dispatch) -> tuple[str, ...]:
        return S.run_env(d, self.request.build_args)  # + proxy build args, which need no ARG

    def ignored(self, src: str) -> bool:
        """Whether ``.dockerignore`` leaves ``src`` (a COPY/ADD source) out of the context."""
        if not self.request.ignore_patterns:
            return False
        if self._ignore is None:
            self._ignore = ignore_matcher(self.request.ignore_patterns)
        rel = posixpath.normpath("/" + src).lstrip("/")
        return bool(rel) and self._ignore.matches(rel)

    def context(self) -> builder.State:
        if self._context is None:
            self._context = builder.local(self.request.context_name, exclude=self.request.ignore_patterns,
                                          meta=ops.OpMetadata("[internal] load build context"))
        return self._context

    # -- stages ---------------------------------------------------------------------------
    def ensure(self, info: StageInfo) -> Dispatch:
        if info.index in self.done:
            return self.done[info.index]
        if info.index in self.active:
            raise DockerfileError(f"circular dependency detected on stage: {info.group}", info.from_.span)
        self.active.add(info.index)
        d, from_desc = self.start(info)
        if info.context is None:
            triggers = d.image.on_build
            d.image.on_build = []
            parsed = [self.parse_trigger(t, info) for t in triggers]
            d.cmd_total = (from_desc is not None) + len(parsed) + sum(
                isinstance(i, (I.Run, I.Copy, I.Add, I.Workdir)) for i in info.instructions)
            if from_desc is not None:
                d.state = _with_source_meta(d.state, self.meta(d, from_desc, info.from_.span))
            for trig in parsed:
                d.on_build = True
                self.dispatch(d, trig, info.from_.span)
            d.on_build = False
            for ins in info.instructions:
                self.dispatch(d, ins, ins.span)
        self.active.discard(info.index)
        self.done[info.index] = d
        return d

    def start(self, info: StageInfo) -> tuple[Dispatch, str | None]:
        """The stage's base: an earlier stage, scratch, a named context or a registry image; and
        the FROM step's description when the base is a source op of its own."""
        f = info.from_
        from_desc = None
        if info.context is not None:
            ext = self.named_context(info.name, info.context, info.platform, f.span)
            d = Dispatch(info, ext.state, ext.image.clone(), ext.platform)
        elif info.base is not None:
            base = self.ensure(info.base)
            d = Dispatch(info, base.state, base.image.clone(), base.platform, dict(base.env), base.cwd,
                         base.user, list(base.build_args))
            return d, None
        elif info.base_name == "scratch":
            d = Dispatch(info, builder.scratch(), ImageState(), info.platform)
            d.state = _with_source_meta(d.state, ops.OpMetadata("FROM scratch", info.group, (self.location(f.span),)))
        else:
            ext = self.external(info.base_name, info.platform, f.span, from_line=True)
            d = Dispatch(info, ext.state, ext.image.clone(), ext.platform)
            self.check_base_platform(info, ext)
            img = ext.state.vertex.op.source.image if ext.state.vertex.op.source else None
            if img is not None:
                from_desc = f"FROM {img.ref}@{img.digest}" if img.digest else f"FROM {img.ref}"
            else:  # a named context, or an image without layers (scratch)
                from_desc = f"FROM {info.base_name}"
        S.inherit(d)
        return d, from_desc

    def check_base_platform(self, info: StageInfo, ext: External) -> None:
        """BuildKit's InvalidBaseImagePlatform check: the config says another OS/architecture."""
        got = ext.image.platform
        want = info.platform
        if got is not None and (got.os, got.architecture) != (want.os, want.architecture):
            self.warn("InvalidBaseImagePlatform", f"Base image {info.from_.image} was pulled with platform "
                      f'"{platform_string(got)}", expected "{platform_string(want)}" for current build',
                      info.from_.span)

    def external(self, ref: str, platform: ops.Platform, span: Span, from_line: bool = False) -> External:
        key = (ref, platform)
        if key in self.externals:
            return self.externals[key]
        ctx = next((self.request.contexts[n] for n in familiar_names(ref) if n in self.request.contexts), None)
        if ctx is not None:
            ext = self.named_context(ref, ctx, platform, span)
        else:
            try:
                resolved = self.resolver.resolve_image(ref, platform)
            except SourceError:
                raise
            except Exception as e:  # the resolver is the backend's; its errors get our location
                hint = did_you_mean(ref, [s.name for s in self.plan.stages if s.name])
                if from_line:
                    raise DockerfileError(f"base image {ref}: {e}{hint}", span) from None
                raise DockerfileError(f'"{ref}" is neither a stage of this Dockerfile nor an image that '
                                      f"could be resolved: {e}{hint}", span) from None
            src = S.image_source(resolved, platform, (self.location(span),))
            ext = External(src.state, src.image, src.platform)
        self.externals[key] = ext
        return ext

    def named_context(self, name: str, ctx: NamedContext, platform: ops.Platform, span: Span) -> External:
        try:
            src = S.named_context(self.request, self.resolver, name, ctx, platform, (self.location(span),))
        except S.StageError as e:
            raise DockerfileError(e.message, span) from None
        return External(src.state, src.image, src.platform)

    def source_of(self, d: Dispatch, value: str, span: Span, what: str = "copy") -> tuple[builder.State, ImageState]:
        """The filesystem ``--from=value`` names: a stage (by name or index), an image, a named context."""
        dep = stage_ref(value, self.plan.stages, self.plan.by_name, span)
        if dep is not None:
            if dep.index >= d.info.index:
                raise DockerfileError(f'cannot {what} from stage "{value}", it needs to be defined before '
                                      f'current stage "{d.info.group}"', span)
            src = self.ensure(dep)
            return src.state, src.image
        ext = self.external(value, self.request.platform, span)
        return ext.state, ext.image

    def parse_trigger(self, text: str, info: StageInfo) -> I.Instruction:
        span = info.from_.span
        try:
            tree = parse_syntax(text, self.request.filename)
            if len(tree.nodes) != 1:
                raise DockerfileError("onbuild trigger should be a single expression", span)
            ins = Builder(tree).build(tree.nodes[0])
        except DockerfileError:
            raise
        except SourceError as e:
            raise DockerfileError(f"ONBUILD trigger {text!r} of {info.base_name}: {e.message}", span) from None
        if isinstance(ins, (I.Onbuild, I.From, I.Maintainer)):
            msg = ("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed" if isinstance(ins, I.Onbuild)
                   else f"{ins.name} isn't allowed as an ONBUILD trigger")
            raise DockerfileError(f"ONBUILD trigger of {info.base_name}: {msg}", span)
        return ins

    # -- instructions ---------------------------------------------------------------------
    def dispatch(self, d: Dispatch, ins: I.Instruction, span: Span) -> None:
        if isinstance(ins, I.Run):
            dispatch_run(self, d, ins, span)
        elif isinstance(ins, (I.Copy, I.Add)):
            dispatch_copy(self, d, ins, span)
        else:
            getattr(self, "_" + ins.name.lower())(d, ins, span)

def _with_source_meta(state: builder.State, meta: ops.OpMetadata) -> builder.State:
    """Attach metadata to a source vertex (same op, same digest; metadata is not hashed)."""
    return replace(state, vertex=replace(state.vertex, meta=meta))


def relocated(fn):
    """Run ``fn``; the parser's located errors become :class:`DockerfileError` (full text in ``str``)."""
    try:
        return fn()
    except DockerfileError:
        raise
    except SourceError as e:
        raise DockerfileError(e.message, e.span) from None


def compile_dockerfile(request: BuildRequest, resolver: ImageResolver) -> Compiled:
    """The Dockerfile in ``request`` as an IR document whose ``default`` root is the target image."""
    return Converter(request, resolver).compile()
