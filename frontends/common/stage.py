"""Stage lowering: the one implementation every step-by-step frontend uses (Dockerfile, TOML, Python DSL).

A *stage* is a filesystem state plus the image config and history being built on top of it, and
the defaults a ``run`` inherits (environment, working directory, user, declared build args).
Every function here takes values that are already expanded and typed — no source text, no
spans — and edits the stage exactly as BuildKit's ``dockerfile2llb`` would.  The Dockerfile
compiler (``frontends/dockerfile/convert*.py``) and :mod:`frontends.common.lower` (TOML recipes,
Python build files) both call these functions, so the same build said in any of the three
languages gives the same ops, image config and history (``created_by``) strings, hence the same
digests (``tests/equivalence/``)::

    s = begin(builder.image(ref, digest), ImageState.from_oci(config), platform)
    set_workdir(s, "/src", meta)
    run(s, ["make"], shell_form=True, mounts=[...], env=run_env(s, {}), meta=meta)
    copy_files(s, ["/out/app"], "/usr/bin/", from_state=other.state, context=ctx, meta=meta)
    final = finish(s, meta)

Problems are raised as :class:`StageError` (a message only); the caller knows where in its own
source the value came from and re-raises it located.  Any object with the attributes of
:class:`Stage` may be passed (the Dockerfile compiler's ``Dispatch`` has them).  The leaf rules
live beside this module, in ``frontends/common/``: the image config record (``image_config``), Go
history formatting (``gostrings``), ``--mount`` parsing (``mounts``), COPY paths, chmod and
checksums (``copy_paths``), platforms and predefined args (``platforms``), variable expansion
(``expand``).  This package never imports a frontend (``tests/test_layering.py``).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

from frontends.common.copy_paths import (check_checksum, check_chmod, dest_path, is_http, parse_git_ref,
                                         url_filename)
from frontends.common.errors import StageError
from frontends.common.gostrings import go_list, go_quoted_list
from frontends.common.image_config import (ImageState, PortError, expose_history, healthcheck_history,
                                           parse_port_specs, valid_signal)
from frontends.common.mounts import MountSpec, cache_id
from frontends.common.platforms import PROXY_ARGS
from frontends.common.sources import Source, image_source, named_context, resolve_source  # noqa: F401 (API)
from ir import builder, ops
from ir.normal import abs_path

__all__ = ["Stage", "StageError", "begin", "derive", "finish", "Source", "resolve_source",
           "image_source", "named_context"]


@dataclass(eq=False)
class Stage:
    """A stage being built (the shape of the Dockerfile compiler's ``Dispatch``)."""

    state: builder.State
    image: ImageState
    platform: ops.Platform
    env: dict[str, str] = field(default_factory=dict)  # what a run sees: image Env + declared args
    cwd: str = "/"
    user: str = ""
    build_args: list[tuple[str, str | None]] = field(default_factory=list)
    cmd_set: bool = False


def begin(state: builder.State, image: ImageState, platform: ops.Platform) -> Stage:
    """A stage on a source (image, scratch, named context): PATH defaulted, Env/WorkingDir/User inherited."""
    s = Stage(state, image.clone(), platform)
    inherit(s)
    return s


def inherit(s: Stage) -> None:
    """Run defaults from the base image's config: PATH when it has none, its Env, WorkingDir, User."""
    s.image.ensure_path()
    for e in s.image.env:
        k, _, v = e.partition("=")
        s.env[k] = v
    if s.image.working_dir:
        s.cwd = abs_path(s.image.working_dir)  # IR normal form
    s.user = s.image.user


def derive(base: Stage) -> Stage:
    """A stage ``FROM`` an earlier stage: everything carried over, nothing re-defaulted."""
    return Stage(base.state, base.image.clone(), base.platform, dict(base.env), base.cwd, base.user,
                 list(base.build_args))


def override_labels(s: Stage, labels: Mapping[str, str]) -> None:
    """``--label``: set on the built target's image over what its LABELs said, with no history entry
    (BuildKit's ``label:`` frontend attributes, applied by ``dockerfile2llb`` after the last instruction)."""
    s.image.labels.update(labels)


def finish(s: Stage, meta: ops.OpMetadata | None = None) -> builder.State:
    """The stage as an image: its filesystem with the config and history attached."""
    return s.state.with_image(s.image.to_ir(), s.image.history, s.platform, meta=meta)


# --------------------------------------------------------------------------- image config


def set_env(s: Stage, pairs: Sequence[tuple[str, str]]) -> None:
    for k, v in pairs:
        s.env[k] = v
        s.image.set_env(k, v)
    s.image.commit("ENV " + " ".join(f"{k}={v}" for k, v in pairs), layer=False)


def add_labels(s: Stage, pairs: Sequence[tuple[str, str]]) -> None:
    for k, v in pairs:
        s.image.labels[k] = v
    s.image.commit("LABEL " + " ".join(f"{k}={v}" for k, v in pairs), layer=False)


def declare_arg(s: Stage, name: str, value: str | None) -> None:
    """``ARG name[=value]`` with the value already chosen (build arg, default or global)."""
    if value is not None:
        s.env[name] = value
    s.build_args.append((name, value))
    s.image.commit("ARG " + name + ("" if value is None else "=" + value), layer=False)


def set_workdir(s: Stage, path: str, meta: ops.OpMetadata | Callable[[], ops.OpMetadata] | None = None) -> str:
    """``WORKDIR``: relative to the current one; a mkdir (owned by USER) unless it is ``/``.
    ``meta`` may be a function, called only when the mkdir is made (a progress step is counted)."""
    wd = posixpath.normpath(posixpath.join("/", s.image.working_dir or "/", path))
    wd = "/" + wd.lstrip("/")
    s.image.working_dir = wd
    s.cwd = wd
    layer = wd != "/"
    if layer:
        owner = owner_of(s.image.user) if s.image.user else None
        s.state = s.state.file([ops.FileAction(mkdir=ops.MkdirAction(wd, 0o755, True, owner))],
                               meta=meta() if callable(meta) else meta)
    s.image.commit("WORKDIR " + wd, layer=layer)
    return wd


def set_user(s: Stage, user: str) -> None:
    s.user = user
    s.image.user = user
    s.image.commit(f"USER {user}", layer=False)


def expose(s: Stage, ports: Sequence[str]) -> None:
    try:
        found = parse_port_specs(list(ports))
    except PortError as e:
        raise StageError(str(e)) from None
    s.image.exposed_ports |= found
    s.image.commit(expose_history(found), layer=False)


def add_volumes(s: Stage, paths: Sequence[str]) -> None:
    for v in paths:
        if not v:
            raise StageError("VOLUME specified can not be an empty string")
        s.image.volumes.add(v)
    s.image.commit(f"VOLUME {go_list(paths)}", layer=False)


def set_stop_signal(s: Stage, sig: str) -> None:
    if not valid_signal(sig):
        raise StageError(f"Invalid signal: {sig}")
    s.image.stop_signal = sig
    s.image.commit(f"STOPSIGNAL {sig}", layer=False)


def set_shell(s: Stage, shell: Sequence[str]) -> None:
    if not shell:
        raise StageError("SHELL requires at least one argument")
    s.image.shell = list(shell)
    s.image.commit(f"SHELL {go_list(shell)}", layer=False)


def set_cmd(s: Stage, args: Sequence[str], shell_form: bool) -> None:
    argv = s.image.with_shell(args) if shell_form else list(args)
    s.image.cmd = argv
    s.cmd_set = True
    s.image.commit(f"CMD {go_quoted_list(argv)}", layer=False)


def set_entrypoint(s: Stage, args: Sequence[str], shell_form: bool) -> None:
    argv = s.image.with_shell(args) if shell_form else list(args)
    s.image.entrypoint = argv
    if not s.cmd_set:  # Docker: ENTRYPOINT resets an inherited CMD
        s.image.cmd = None
    s.image.commit(f"ENTRYPOINT {go_quoted_list(argv)}", layer=False)


def set_maintainer(s: Stage, name: str) -> None:
    """``MAINTAINER`` (deprecated): the ``maintainer`` label."""
    s.image.labels["maintainer"] = name
    s.image.commit(f"MAINTAINER {name}", layer=False)


def add_onbuild(s: Stage, instruction: str) -> None:
    """``ONBUILD``: a Dockerfile instruction for images built FROM this one (no history line)."""
    s.image.on_build.append(instruction)


def set_healthcheck(s: Stage, h: ops.Healthcheck) -> None:
    s.image.healthcheck = h
    s.image.commit(healthcheck_history(h), layer=False)


def healthcheck(test: Sequence[str] | None, *, shell_form: bool = False, interval: float = 0, timeout: float = 0,
                start_period: float = 0, start_interval: float = 0, retries: int = 0) -> ops.Healthcheck:
    """A healthcheck from seconds: ``test=None`` disables (``NONE``), shell form runs ``CMD-SHELL``."""
    def ns(seconds: float) -> int:
        return int(round(seconds * 1_000_000_000))

    if test is None:
        argv: tuple[str, ...] = ("NONE",)
    elif shell_form:
        argv = ("CMD-SHELL", " ".join(test))
    else:
        argv = ("CMD", *test)
    return ops.Healthcheck(argv, ns(interval), ns(timeout), ns(start_period), ns(start_interval), retries)


def owner_of(chown: str) -> ops.Owner:
    user, _, group = chown.partition(":")
    return ops.Owner(user, group)


# --------------------------------------------------------------------------- run


def run_env(s: Stage, build_args: Mapping[str, str]) -> tuple[str, ...]:
    """The environment of a run: the stage's, plus proxy build args (BuildKit passes those without an ARG)."""
    env = dict(s.env)
    for k in PROXY_ARGS:
        if k in build_args and k not in env:
            env[k] = build_args[k]
    return tuple(f"{k}={v}" for k, v in env.items())


def run_command_string(args: Sequence[str], s: Stage) -> str:
    """BuildKit ``runCommandString``: ``|2 A=1 B=2 /bin/sh -c make`` when ARGs are declared."""
    seen: dict[str, int] = {}
    pairs: list[str] = []
    for key, value in s.build_args:
        v = s.env.get(key, value if value is not None else "")
        if key in seen:
            pairs[seen[key]] = f"{key}={v}"
        else:
            seen[key] = len(pairs)
            pairs.append(f"{key}={v}")
    head = [f"|{len(pairs)}", *pairs] if pairs else []
    return " ".join(head + list(args))


def run(s: Stage, args: Sequence[str], *, shell_form: bool, mounts: Sequence[builder.RunMount] = (),
        env: Sequence[str], network: ops.Network | None = None, security: ops.Security | None = None,
        cwd: str | None = None, user: str | None = None, meta: ops.OpMetadata | None = None,
        sandbox: Mapping | None = None) -> None:
    """``RUN``: an exec op on the stage's root; history ``RUN <argv> # buildkit``.  ``sandbox``: the
    build's own exec options (``BuildRequest.exec_sandbox``), the same on every run."""
    argv = s.image.with_shell(args) if shell_form else list(args)
    if not argv:
        raise StageError("a run needs a command")
    seen: set[str] = set()
    for m in mounts:
        if m.target and m.target in seen:
            raise StageError(f"two mounts at {m.target} (a mount without target= lands on the working directory)"
                             if m.target == posixpath.normpath(posixpath.join("/", cwd or s.cwd)) else
                             f"two mounts at {m.target}")
        seen.add(m.target)
    s.state = s.state.run(argv, mounts=list(mounts), env=tuple(env), cwd=cwd or s.cwd,
                          user=s.user if user is None else user, network=network,
                          security=security, platform=s.platform, meta=meta, **(sandbox or {}))
    s.image.commit("RUN " + run_command_string(argv, s), layer=True, buildkit_suffix=True)


def mount_target(cwd: str, target: str) -> str:
    """A mount target relative to the working directory, made absolute; ``/`` is refused.  An
    empty target is the working directory itself (BuildKit joins it the same way), so a bind,
    cache or tmpfs mount without ``target=`` lands there, and is refused only when that is ``/``."""
    path = posixpath.normpath(posixpath.join("/", cwd, target))
    path = "/" + path.lstrip("/")
    if path == "/":
        if not target:
            raise StageError('invalid mount target "/": a mount without target= mounts at the working '
                             'directory, which is / here (give target= or set WORKDIR)')
        raise StageError(f'invalid mount target "{target}"')
    return path


def lower_mount(cwd: str, m: MountSpec, source_of: Callable[[str], builder.State],
                context: Callable[[], builder.State]) -> builder.RunMount:
    """A mount, BuildKit's defaults applied (``parse_mount(…, ssh_index=)``), as the exec op's:
    ``source_of(name)`` is the state ``from=name`` reads, ``context()`` the build context.  An
    option the user did not give is left out, so the IR's default (``ir/ops.py``) applies."""
    owner = _given(uid=m.uid, gid=m.gid, mode=m.mode)
    if m.type in ("secret", "ssh"):
        target = mount_target(cwd, m.target) if m.target else ""
        if m.type == "secret":
            return builder.secret(m.id, target, required=m.required, **_given(env=m.env), **owner)
        return builder.ssh(target, m.id or None, required=m.required, **owner)
    target = mount_target(cwd, m.target)
    if m.type == "tmpfs":
        return builder.tmpfs(target, m.size)
    selector = posixpath.normpath(posixpath.join("/", m.source)) if m.source else ""
    selector = "" if selector in ("/", "//") else selector
    if m.type == "cache":
        return builder.cache(target, cache_id(m, target), m.sharing or None,
                             seed=source_of(m.from_) if m.from_ else None, selector=selector,
                             readonly=m.readonly, **owner)
    src = source_of(m.from_) if m.from_ else context()
    return builder.bind(target, src, selector=selector, readonly=m.readonly)


def _given(**options) -> dict:
    return {k: v for k, v in options.items() if v is not None}


# --------------------------------------------------------------------------- copy / add


def copy_files(s: Stage, sources: Sequence[str], dest: str, *, context: Callable[[], builder.State],
               from_state: builder.State | None = None, add: bool = False, chown: str = "", chmod: str = "",
               exclude: Iterable[str] = (), parents: bool = False, link: bool = False, checksum: str = "",
               keep_git_dir: bool = False, unpack: bool | None = None,
               inline: Sequence[tuple[str, bytes]] = (), meta: ops.OpMetadata | None = None,
               link_meta: ops.OpMetadata | None = None, chmod_text: str | None = None,
               on_local: Callable[[str], None] | None = None) -> None:
    """``COPY``/``ADD`` (BuildKit ``dispatchCopy``) with every value expanded: one file op of copy
    actions, or with ``link`` one on scratch merged on top.  ``inline`` files (path, bytes) are
    made on scratch first (``COPY <<EOF``).  ``chmod_text`` is the mode as the user wrote it, for
    the history line (default: the normalised mode).  ``on_local(src)`` is called for each
    source read from the build context (the Dockerfile warns about ignored ones)."""
    kw = "ADD" if add else "COPY"
    dest_abs = dest_path(s.cwd, dest)
    if chmod:
        chmod = check_chmod(chmod)
    if add and checksum:
        check_checksum(checksum, list(sources))
    exclude = tuple(exclude)
    history = [kw]
    if parents:
        history.append("--parents")
    if chown:
        history.append("--chown=" + chown)
    if chmod:
        history.append("--chmod=" + (chmod_text or chmod))
    common = dict(owner=owner_of(chown) if chown else None, chmod=chmod, exclude=exclude)
    actions: list[ops.FileAction] = []
    inputs: list[builder.State] = []

    def put(state: builder.State, src_path: str, **more) -> None:
        inputs.append(state)
        actions.append(ops.FileAction(copy=ops.CopyAction(src=len(inputs) - 1, src_path=src_path, dest=dest_abs,
                                                          create_dest_path=True, **common, **more)))

    for src in sources:
        history.append(src)
        git = parse_git_ref(src)
        if git is not None and from_state is None:
            if not add:
                raise StageError("source can't be a git ref for COPY")
            remote, ref, subdir = git
            put(builder.git(remote, ref, keep_git_dir=keep_git_dir, subdir=subdir, meta=meta), "/",
                contents_only=True)
        elif is_http(src) and from_state is None:
            if not add:
                raise StageError("source can't be a URL for COPY")
            name = url_filename(src)
            put(builder.http(src, checksum=checksum, filename=name, meta=meta), "/" + name, unpack=unpack is True)
        else:
            patterns: tuple[str, ...] = ()
            path = src
            if parents:
                pivot, sep, pattern = src.partition("/./")
                if not sep:
                    pivot, pattern = "/", src
                patterns = (abs_path(pattern).lstrip("/"),)
                path = pivot
            if from_state is None and on_local is not None:
                on_local(src)
            put(from_state if from_state is not None else context(), abs_path(path),
                follow_symlinks=True, contents_only=True, include=patterns,
                unpack=add and unpack is not False, allow_wildcard=True, allow_empty_wildcard=True)
    for path, data in inline:
        history.append("<<" + path)
        doc = builder.scratch().file([ops.FileAction(mkfile=ops.MkfileAction("/" + path, data, 0o644))],
                                     meta=ops.OpMetadata("[internal] preparing inline document",
                                                         meta.group if meta else "",
                                                         meta.locations if meta else ()), on_scratch=True)
        put(doc, "/" + path)
    if not actions:
        raise StageError(f"{kw} needs at least one source")
    history.append(dest)
    if link:
        layer = s.state.file(actions, inputs, meta=meta, on_scratch=True)
        s.state = s.state.merge([layer], meta=link_meta or meta)
    else:
        s.state = s.state.file(actions, inputs, meta=meta)
    s.image.commit(" ".join(history), layer=True, buildkit_suffix=True)
