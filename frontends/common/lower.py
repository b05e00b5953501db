"""Lower a :class:`~frontends.common.model.Recipe` to an IR document.

Shared by the TOML and the Python DSL frontends.  The stage plan follows the Dockerfile's: the
global build args (with the predefined ``TARGETPLATFORM`` & co.) are evaluated first and expand
each stage's ``from``; a stage whose ``from`` names another stage continues it, ``scratch`` is an
empty filesystem, anything else is a named context or a registry image pinned by digest.  Only
the stages the chosen target needs are lowered, each once; each step goes through
:mod:`frontends.common.stage`, so ops, image config and history match the Dockerfile compiler's
for the same build.  Every op carries a source-map entry pointing at the step's line.
"""

from __future__ import annotations

import posixpath
from typing import Any

from frontends import BuildRequest, Compiled, ImageResolver
from frontends.common import stage as S
from frontends.common.errors import ExpandError
from frontends.common.expand import Expander
from frontends.common.model import MountDecl, Recipe, StageDecl, Step, Where
from frontends.common.mounts import MountError, mount_from_options
from frontends.common.platforms import parse_platform, predefined_args
from frontends.errors import FrontendError, SourceError, quoted_hint
from ir import builder, ops

_LAYER_STEPS = ("run", "copy", "add", "workdir")


class RecipeError(FrontendError):
    """A located error: ``file:line: key.path: message`` (the path is left out when empty)."""

    def __init__(self, message: str, where: Where) -> None:
        self.message = message
        self.where = where
        head = f"{where.file}:{where.line}" if where.line else where.file
        super().__init__(f"{head}: {where.path + ': ' if where.path else ''}{message}")


class Lowerer:
    def __init__(self, recipe: Recipe, request: BuildRequest, resolver: ImageResolver,
                 sources: list[ops.SourceFile]) -> None:
        self.recipe = recipe
        self.request = request
        self.resolver = resolver
        self.sources = sources
        self.by_name = {s.name: s for s in recipe.stages}
        self.done: dict[str, S.Stage] = {}
        self.active: list[str] = []
        self.externals: dict[tuple[str, ops.Platform], S.Source] = {}
        self._context: builder.State | None = None
        self.expander = Expander("\\", skip_process_quotes=True)
        self.warnings: list[str] = []

    # -- entry ----------------------------------------------------------------------------
    def compile(self) -> Compiled:
        target_stage = self.target()
        self.globals = predefined_args(self.request, target_stage.name)
        for name, default, where in self.recipe.args:
            if name in self.request.build_args:
                self.globals[name] = self.request.build_args[name]
            elif default is not None:
                self.globals[name] = self.word(default, self.globals, where)
        self.single = len(self.recipe.stages) == 1
        s = self.ensure(target_stage)
        S.override_labels(s, self.request.labels)
        final = S.finish(s, ops.OpMetadata(f"exporting image config of {target_stage.name}", target_stage.name,
                                           (self.location(target_stage.where),)))
        doc = builder.build_document({"default": final}, sources=tuple(self.sources))
        return Compiled(doc, tuple(self.warnings))

    def target(self) -> StageDecl:
        if not self.recipe.stages:
            raise RecipeError("no stages to build", Where(self.sources[0].name, 1))
        targets = self.recipe.targets
        for name, (stage, where) in targets.items():
            if stage not in self.by_name:
                raise RecipeError(f'target "{name}" names no stage: "{stage}"'
                                  + quoted_hint(stage, list(self.by_name)), where)
        wanted = self.request.target
        if wanted:
            if wanted in targets:
                return self.by_name[targets[wanted][0]]
            if wanted in self.by_name:
                return self.by_name[wanted]
            raise FrontendError(f'target "{wanted}" could not be found'
                                + quoted_hint(wanted, sorted({*targets, *self.by_name})))
        if "default" in targets:
            return self.by_name[targets["default"][0]]
        return self.recipe.stages[-1]

    # -- helpers --------------------------------------------------------------------------
    def location(self, where: Where) -> ops.Location:
        names = [s.name for s in self.sources]
        index = names.index(where.file) if where.file in names else 0
        return ops.Location(index, max(where.line, 1), where.column)

    def word(self, text: Any, env: dict[str, str], where: Where) -> str:
        if not isinstance(text, str):
            return str(text)
        if not self.recipe.expand or "$" not in text:
            return text
        try:
            return self.expander.word(text, env)
        except ExpandError as e:
            raise RecipeError(e.message, where) from None

    def context(self) -> builder.State:
        if self._context is None:
            self._context = builder.local(self.request.context_name, exclude=self.request.ignore_patterns,
                                          meta=ops.OpMetadata("[internal] load build context"))
        return self._context

    def external(self, ref: str, platform: ops.Platform, where: Where) -> S.Source:
        key = (ref, platform)
        if key not in self.externals:
            try:
                self.externals[key] = S.resolve_source(self.request, self.resolver, ref, platform,
                                                       (self.location(where),))
            except S.StageError as e:
                raise RecipeError(e.message + quoted_hint(ref, list(self.by_name)), where) from None
        return self.externals[key]

    def source_of(self, name: str, current: StageDecl, where: Where) -> builder.State:
        """The filesystem ``from = name`` reads: another stage, else an image or named context."""
        if name in self.by_name:
            if name == current.name:
                raise RecipeError(f'stage "{name}" cannot read from itself', where)
            return self.ensure(self.by_name[name], where).state
        return self.external(name, self.request.platform, where).state

    # -- stages ---------------------------------------------------------------------------
    def ensure(self, decl: StageDecl, via: Where | None = None) -> S.Stage:
        if decl.name in self.done:
            return self.done[decl.name]
        if decl.name in self.active:
            loop = " -> ".join(self.active[self.active.index(decl.name):] + [decl.name])
            raise RecipeError(f"circular dependency between stages: {loop}", via or decl.where)
        self.active.append(decl.name)
        s, from_desc = self.start(decl)
        counter = {"i": 0, "n": (from_desc is not None) + sum(st.kind in _LAYER_STEPS for st in decl.steps)}
        if from_desc is not None:
            s.state = _with_meta(s.state, self.meta(decl, counter, from_desc, decl.base_where or decl.where))
        for step in decl.steps:
            self.dispatch(decl, s, step, counter)
        self.active.pop()
        self.done[decl.name] = s
        return s

    def start(self, decl: StageDecl) -> tuple[S.Stage, str | None]:
        base_where = decl.base_where or decl.where
        base = self.word(decl.base, self.globals, base_where)
        if not base:
            raise RecipeError(f"base name ({decl.base}) should not be blank", base_where)
        platform = self.request.platform
        if decl.platform:
            text = self.word(decl.platform, self.globals, decl.platform_where or decl.where)
            try:
                platform = parse_platform(text)
            except ValueError as e:
                raise RecipeError(f"failed to parse platform {text}: {e}", decl.platform_where or decl.where) from None
        if (decl.base_is_stage is not False and base in self.by_name and base != decl.name
                and base not in self.request.contexts):
            return S.derive(self.ensure(self.by_name[base], base_where)), None
        if decl.name in self.request.contexts:  # --build-context NAME=… replaces the stage NAME
            src = S.named_context(self.request, self.resolver, decl.name, self.request.contexts[decl.name],
                                  platform, (self.location(decl.where),))
            return S.begin(src.state, src.image, src.platform), None
        src = self.external(base, platform, base_where)
        s = S.begin(src.state, src.image, src.platform)
        if s.image.on_build:
            self.warnings.append(f"{base_where.file}:{base_where.line}: warning: base image {base} has ONBUILD "
                                 f"triggers, which only a Dockerfile runs; they are dropped: "
                                 + "; ".join(s.image.on_build))
            s.image.on_build = []
        return s, (src.description or f"FROM {base}")

    def meta(self, decl: StageDecl, counter: dict, text: str, where: Where, step: bool = True) -> ops.OpMetadata:
        if step and counter["n"]:
            counter["i"] += 1
            width = len(str(counter["n"]))
            head = "[" + ("" if self.single else decl.name + " ") + f"{counter['i']:>{width}}/{counter['n']}] "
            text = head + text
        return ops.OpMetadata(text, decl.name, (self.location(where),))

    # -- steps ----------------------------------------------------------------------------
    def dispatch(self, decl: StageDecl, s: S.Stage, step: Step, counter: dict) -> None:
        f, w = step.fields, step.where
        word = lambda v, at=step.at(step.kind): self.word(v, s.env, at)  # noqa: E731
        try:
            if step.kind == "run":
                self.run(decl, s, step, counter)
            elif step.kind in ("copy", "add"):
                self.copy(decl, s, step, counter)
            elif step.kind == "env":
                S.set_env(s, [(word(k), word(v)) for k, v in f["pairs"]])
            elif step.kind == "label":
                S.add_labels(s, [(word(k), word(v)) for k, v in f["pairs"]])
            elif step.kind == "workdir":
                path = word(f["value"])
                S.set_workdir(s, path, self.meta(decl, counter, step.text or f"WORKDIR {path}", w))
            elif step.kind == "user":
                S.set_user(s, word(f["value"]))
            elif step.kind == "expose":
                S.expose(s, [word(p) for p in f["ports"]])
            elif step.kind == "volume":
                S.add_volumes(s, [word(p) for p in f["paths"]])
            elif step.kind == "stopsignal":
                S.set_stop_signal(s, word(f["value"]))
            elif step.kind == "shell":
                S.set_shell(s, list(f["argv"]))
            elif step.kind in ("cmd", "entrypoint"):
                cmd = f["cmd"]
                args = [cmd] if isinstance(cmd, str) else list(cmd)
                (S.set_cmd if step.kind == "cmd" else S.set_entrypoint)(s, args, isinstance(cmd, str))
            elif step.kind == "healthcheck":
                cmd = f.get("cmd")
                argv = None if cmd is None else ([cmd] if isinstance(cmd, str) else list(cmd))
                S.set_healthcheck(s, S.healthcheck(argv, shell_form=isinstance(cmd, str),
                                                   **{k: f[k] for k in ("interval", "timeout", "start_period",
                                                                         "start_interval", "retries") if k in f}))
            elif step.kind == "onbuild":
                S.add_onbuild(s, f["value"])
            elif step.kind == "maintainer":
                S.set_maintainer(s, f["value"])  # not expanded, as in a Dockerfile
            elif step.kind == "arg":
                name, default = f["name"], f.get("default")
                if name in self.request.build_args:
                    value = self.request.build_args[name]
                elif default is not None:
                    value = word(default)
                else:
                    value = self.globals.get(name)
                S.declare_arg(s, name, value)
            else:
                raise RecipeError(f"unknown step kind {step.kind!r}", w)
        except S.StageError as e:
            raise RecipeError(e.message, step.at(_error_key(step, e.message)) if w.path else w) from None

    def run(self, decl: StageDecl, s: S.Stage, step: Step, counter: dict) -> None:
        f, w = step.fields, step.where
        cmd = f["cmd"]
        shell_form = isinstance(cmd, str)
        args = [cmd] if shell_form else list(cmd)
        if not args or (shell_form and not cmd.strip()):
            raise RecipeError("a run needs a command", w)
        cwd = s.cwd
        if f.get("workdir"):
            cwd = "/" + posixpath.normpath(posixpath.join(s.cwd, self.word(f["workdir"], s.env, w))).lstrip("/")
        user = self.word(f["user"], s.env, w) if f.get("user") is not None else None
        env = dict(e.split("=", 1) for e in S.run_env(s, self.request.build_args))
        for k, v in f.get("env", ()):
            env[self.word(k, s.env, w)] = self.word(v, s.env, w)
        network = self.mode(f.get("network"), ops.NETWORK_MODES, "network", s, step.at("network"))
        security = self.mode(f.get("security"), ops.SECURITY_MODES, "security", s, step.at("security"))
        mounts = []
        ssh_n = 0
        for m in f.get("mounts", ()):
            spec = self.mount(decl, s, m, cwd, ssh_n)
            ssh_n += m.type == "ssh"
            mounts.append(spec)
        text = step.text or "RUN " + (cmd if shell_form else _json_list(args))
        S.run(s, args, shell_form=shell_form, mounts=mounts, env=[f"{k}={v}" for k, v in env.items()],
              network=network, security=security, cwd=cwd, user=user,
              meta=self.meta(decl, counter, text, w), sandbox=self.request.exec_sandbox())

    def mode(self, value, allowed, what: str, s: S.Stage, where: Where) -> str | None:
        if value is None:
            return None
        value = self.word(value, s.env, where)
        if value not in allowed:
            raise RecipeError(f'unknown {what} mode "{value}"' + quoted_hint(value, allowed), where)
        return value

    def mount(self, decl: StageDecl, s: S.Stage, m: MountDecl, cwd: str, ssh_n: int) -> builder.RunMount:
        """A declared mount, checked and defaulted by the Dockerfile's ``--mount`` rules."""
        try:
            spec = mount_from_options(m.type, m.options, lambda v: self.word(v, s.env, m.where), ssh_index=ssh_n)
            return S.lower_mount(cwd, spec, lambda name: self.source_of(name, decl, m.where), self.context)
        except MountError as e:
            where = m.where
            if where.path and e.key:  # TOML: name the key at fault
                where = Where(where.file, m.lines.get(e.key, where.line), f"{where.path}.{e.key}", where.column)
            raise RecipeError(e.message, where) from None
        except S.StageError as e:
            raise RecipeError(e.message, m.where) from None

    def copy(self, decl: StageDecl, s: S.Stage, step: Step, counter: dict) -> None:
        f, w = step.fields, step.where
        word = lambda v, key=None: self.word(v, s.env, step.at(key) if key else w)  # noqa: E731
        add = step.kind == "add"
        sources = [word(x, "src") for x in f["src"]]
        dest = word(f["dest"], "dest")
        from_state = self.source_of(word(f["from"], "from"), decl, step.at("from")) if f.get("from") else None
        chmod = f.get("chmod", "")
        chmod = f"{chmod:04o}" if isinstance(chmod, int) and not isinstance(chmod, bool) else word(chmod, "chmod")
        text = step.text or " ".join(["ADD" if add else "COPY", *sources, dest])
        meta = self.meta(decl, counter, text, w)
        head, sep, rest = meta.description.partition("] ")
        link_meta = ops.OpMetadata(f"{head}] LINK {rest}" if sep else "LINK " + meta.description, meta.group,
                                   meta.locations)
        S.copy_files(s, sources, dest, context=self.context, from_state=from_state, add=add,
                     chown=word(f.get("chown", ""), "chown"), chmod=chmod,
                     exclude=[word(e, "exclude") for e in f.get("exclude", ())], parents=bool(f.get("parents")),
                     link=bool(f.get("link")), checksum=word(f.get("checksum", ""), "checksum"),
                     keep_git_dir=bool(f.get("keep_git_dir")), unpack=f.get("unpack"),
                     inline=[(name, self.word(text, s.env, step.at("inline")).encode())
                             for name, text in f.get("inline", ())],
                     meta=meta, link_meta=link_meta, chmod_text=chmod)


def lower(recipe: Recipe, request: BuildRequest, resolver: ImageResolver,
          sources: list[ops.SourceFile]) -> Compiled:
    """The recipe's target (``request.target``, else ``targets.default``, else the last stage) as IR."""
    try:
        return Lowerer(recipe, request, resolver, sources).compile()
    except SourceError as e:  # a located error from a shared Dockerfile helper
        raise RecipeError(e.message, Where(e.span.file, e.span.line)) from None


_ERROR_KEYS = (("chmod", "chmod"), ("checksum", "checksum"), ("git ref", "copy"), ("URL", "copy"))


def _error_key(step: Step, message: str) -> str:
    """Which key of ``step`` a shared stage check complained about."""
    if step.kind in ("copy", "add"):
        for needle, key in _ERROR_KEYS:
            if needle in message:
                return step.kind if key == "copy" else key
        return step.kind
    return step.kind


def _with_meta(state: builder.State, meta: ops.OpMetadata) -> builder.State:
    from dataclasses import replace

    return replace(state, vertex=replace(state.vertex, meta=meta))


def _json_list(args: list[str]) -> str:
    import json

    return json.dumps(args)
