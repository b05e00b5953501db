"""Load a Python build file and compile the stages it declares.

**Loading a build file executes it**, so this module runs only inside the sandbox
(:mod:`.sandbox` starts :mod:`.child`, which calls :func:`compile_pydsl`); the frontend object never
calls it on the host.  What the frontend itself never does is run a build step: the file's calls to :mod:`.api` only record a
recipe, which is lowered to IR by the code the TOML frontend uses (:mod:`frontends.common.lower`),
so the same image compiles to the same graph from either, or from a Dockerfile.

The file's text (``BuildRequest.source``) is compiled under its own name and executed in a fresh
module namespace (what ``runpy.run_path`` does, but from the bytes the CLI read — a frontend opens
no files), so tracebacks and the source map point at ``build.py:LINE``.  Its targets are what it
passed to ``target(name, stage)``, else a module-level ``targets = {name: stage}``.
"""

from __future__ import annotations

import traceback

from frontends import BuildRequest, Compiled, ImageResolver
from frontends.common.lower import lower
from frontends.common.model import MountDecl, Recipe, StageDecl, Step, Where
from frontends.pydsl.api import DslError, Session, Stage, active_session
from ir import ops


def execute(request: BuildRequest) -> tuple[Session, dict]:
    """Run the build file in a fresh namespace; returns what it declared and its globals."""
    session = Session(dict(request.build_args))
    namespace = {"__name__": "__irctl_build__", "__file__": request.filename, "__builtins__": __builtins__}
    try:
        code = compile(request.source, request.filename, "exec", dont_inherit=True)
    except SyntaxError as e:
        raise DslError(f"SyntaxError: {e.msg}", Where(request.filename, e.lineno or 1)) from None
    token = active_session.set(session)
    try:
        exec(code, namespace)
    except DslError:
        raise
    except SystemExit as e:
        raise DslError(f"the build file called exit({e.code})", _user_frame(e, request.filename)) from None
    except Exception as e:
        text = "".join(traceback.format_exception_only(type(e), e)).strip()
        raise DslError(text, _user_frame(e, request.filename)) from None
    finally:
        active_session.reset(token)
    return session, namespace


def _user_frame(e: BaseException, filename: str) -> Where:
    line = 0
    for frame, lineno in traceback.walk_tb(e.__traceback__):
        if frame.f_code.co_filename == filename:
            line = lineno
    return Where(filename, line)


class _Namer:
    """Stage values become named stage declarations (the same value once), dependencies first."""

    def __init__(self) -> None:
        self.names: dict[int, str] = {}
        self.taken: set[str] = set()
        self.decls: list[StageDecl] = []

    def name(self, stage: Stage, hint: str = "") -> str:
        key = id(stage)
        if key in self.names:
            return self.names[key]
        wanted = stage.name or hint or f"stage-{len(self.names)}"
        name, n = wanted, 1
        while name in self.taken:
            n += 1
            name = f"{wanted}-{n}"
        self.taken.add(name)
        self.names[key] = name
        if isinstance(stage.base, Stage):  # FROM another stage
            base, from_stage = self.name(stage.base), True
        else:
            base, from_stage = stage.base, False
        steps = tuple(self.step(s) for s in stage.steps)
        self.decls.append(StageDecl(name, base, steps, stage.where, stage.platform, base_is_stage=from_stage))
        return name

    def ref(self, value):
        return self.name(value) if isinstance(value, Stage) else value

    def step(self, step: Step) -> Step:
        fields = dict(step.fields)
        if "from" in fields:
            fields["from"] = self.ref(fields["from"])
        if "mounts" in fields:
            fields["mounts"] = tuple(MountDecl(m.type, tuple((k, self.ref(v)) for k, v in m.options), m.where)
                                     for m in fields["mounts"])
        return Step(step.kind, fields, step.where, step.text)


def to_recipe(session: Session, namespace: dict, filename: str) -> Recipe:
    declared = dict(session.targets)
    if not declared and isinstance(namespace.get("targets"), dict):
        for name, stage in namespace["targets"].items():
            if not isinstance(stage, Stage):
                raise DslError(f"targets[{name!r}]: expected a stage, not {type(stage).__name__}", Where(filename, 0))
            declared[name] = (stage, stage.where)
    if not declared:
        raise DslError('declares no targets: call target("default", stage) or set targets = {"default": stage}',
                       Where(filename, 0))
    namer = _Namer()
    targets = {}
    for name, (stage, where) in declared.items():
        targets[name] = (namer.name(stage, hint=name), where)
    args = tuple((name, default, where) for name, (default, where) in session.args.items())
    return Recipe(tuple(namer.decls), args, targets, language="python", expand=False)


def compile_pydsl(request: BuildRequest, resolver: ImageResolver) -> Compiled:
    """Execute the build file, then lower what it declared (``request.target``, else ``default``)."""
    session, namespace = execute(request)
    recipe = to_recipe(session, namespace, request.filename)
    return lower(recipe, request, resolver, [ops.SourceFile(request.filename, "python", request.source)])
