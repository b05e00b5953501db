"""The Python DSL: build images with plain, synchronous Python.

A build file (``build.py``) imports these names, chains steps on immutable stages, and declares
what to build::

    from frontends.pydsl import arg, cache, image, secret, target

    VERSION = arg("VERSION", "1.0")            # a build arg: --build-arg VERSION=… or the default

    build = (image("busybox", name="build")
             .workdir("/src")
             .copy("greet.sh", ".")
             .run("sh greet.sh > /greeting.txt",
                  mounts=[cache("/cache"), secret("token", required=True)]))

    app = (image("busybox", name="app")
           .copy("/greeting.txt", "/app/", from_=build)   # a file from another stage
           .env(GREETING_FILE="/app/greeting.txt", VERSION=VERSION)
           .workdir("/app")
           .cmd(["cat", "/app/greeting.txt"]))

    target("default", app)                      # or: targets = {"default": app}

Every method returns a new :class:`Stage`; a stage value can be continued in two directions and
each branch builds on the shared steps (which the graph computes once).  Strings are used
verbatim — no ``$VAR`` expansion: this is Python, use f-strings.  ``run``/``cmd``/``entrypoint``
take a string (shell form, run by ``/bin/sh -c`` or the stage's ``shell``) or a list (exec form).

Each step remembers the file and line of the Python code that made it; errors and ``irctl dump``
point there.  Nothing here runs a build step: calling these functions only records a recipe,
which the frontend lowers to IR exactly as it lowers a Dockerfile or a TOML recipe.
"""

from __future__ import annotations

import sys
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping, Sequence

from frontends.errors import FrontendError, quoted_hint
from frontends.common.model import MountDecl, Step, Where
from ir.ops import NETWORK_MODES, SECURITY_MODES, SHARING_MODES

__all__ = ["Stage", "DslError", "image", "scratch", "arg", "target", "cache", "secret", "bind", "tmpfs", "ssh"]

_PACKAGE_DIR = __file__.rsplit("/", 1)[0]


class DslError(FrontendError):
    """A misuse of the DSL, located at the line of the build file that made it."""

    def __init__(self, message: str, where: Where | None = None) -> None:
        self.where = where or caller()
        self.message = message
        head = f"{self.where.file}:{self.where.line}" if self.where.line else self.where.file
        super().__init__(f"{head}: {message}")


def caller() -> Where:
    """The innermost frame outside this package: the user's line that called the DSL."""
    f = sys._getframe(1)
    while f is not None and f.f_code.co_filename.startswith(_PACKAGE_DIR):
        f = f.f_back
    if f is None:
        return Where("<unknown>")
    column = 0
    try:  # the column where the calling expression starts (Python 3.11 code positions)
        pos = list(f.f_code.co_positions())[f.f_lasti // 2]
        if pos[0] == f.f_lineno and pos[2] is not None:
            column = pos[2] + 1
    except (IndexError, ValueError):
        pass
    return Where(f.f_code.co_filename, f.f_lineno, column=column)


# --------------------------------------------------------------------------- the session


@dataclass
class Session:
    """What one load of a build file collects: the build args asked for, the targets declared."""

    build_args: Mapping[str, str]
    args: dict[str, tuple[str | None, Where]] = field(default_factory=dict)
    targets: dict[str, tuple["Stage", Where]] = field(default_factory=dict)


active_session: ContextVar[Session | None] = ContextVar("irctl_pydsl_session", default=None)


def _current() -> Session:
    s = active_session.get()
    if s is None:  # imported outside `irctl build`: still usable, with no build args
        s = Session({})
        active_session.set(s)
    return s


# --------------------------------------------------------------------------- stages


@dataclass(frozen=True, eq=False)
class Stage:
    """An image being described: a base (an image reference, ``scratch``, or another stage) and
    steps, in order.  Chaining adds steps to the same stage; :meth:`stage` starts a new stage
    from this one (Dockerfile ``FROM this AS name``)."""

    base: "str | Stage"
    steps: tuple[Step, ...] = ()
    name: str = ""
    platform: str = ""
    where: Where = field(default_factory=lambda: Where("<unknown>"))

    def _add(self, kind: str, text: str, **fields: Any) -> "Stage":
        return replace(self, steps=self.steps + (Step(kind, fields, caller(), text),))

    def stage(self, name: str = "") -> "Stage":
        """A new stage that starts from this one, as Dockerfile ``FROM this AS name``: files,
        config, environment and declared args carry over; a ``cmd`` set here is no longer this
        stage's own, so a later ``entrypoint`` resets it (Docker's rule)."""
        return Stage(self, name=_str(name, "stage: name"), platform=self.platform, where=caller())

    # -- filesystem steps ---------------------------------------------------------------
    def run(self, cmd: str | Sequence[str], *, mounts: Iterable[MountDecl] = (), env: Mapping[str, str] | None = None,
            workdir: str | None = None, user: str | None = None, network: str | None = None,
            security: str | None = None) -> "Stage":
        """Run ``cmd`` (a string: shell form; a list: argv) on the stage's filesystem.

        ``mounts`` from :func:`cache`, :func:`secret`, :func:`bind`, :func:`tmpfs`, :func:`ssh`;
        ``env``/``workdir``/``user`` apply to this run only; ``network`` is ``default``, ``none``
        or ``host``; ``security`` ``sandbox`` or ``insecure``."""
        command = _command(cmd, "run")
        _choice("run: network", network, NETWORK_MODES)
        _choice("run: security", security, SECURITY_MODES)
        mounts = tuple(mounts)
        for m in mounts:
            if not isinstance(m, MountDecl):
                raise DslError(f"run: mounts take cache(), secret(), bind(), tmpfs() or ssh(), not {type(m).__name__}")
        text = "RUN " + (command if isinstance(command, str) else _json(command))
        return self._add("run", text, cmd=command, mounts=mounts,
                         env=[(_str(k, "run: env"), _str(v, "run: env")) for k, v in (env or {}).items()],
                         workdir=workdir, user=user, network=network, security=security)

    def copy(self, src: str | Sequence[str], dest: str, *, from_: "Stage | str | None" = None, chown: str = "",
             chmod: str | int = "", link: bool = False, exclude: Sequence[str] = (), parents: bool = False,
             inline: Mapping[str, str] | None = None) -> "Stage":
        """Copy ``src`` (a path or paths in the build context, or in ``from_``: another stage, an
        image reference or a named context) to ``dest`` (relative to the working directory; a
        trailing ``/`` makes it a directory).  ``link=True`` makes the copy independent of the
        layers below (``COPY --link``).  ``inline={"motd": "hello\\n"}`` writes files from text
        (``COPY <<motd``), copied after ``src`` (which may then be ``[]``)."""
        return self._copy("copy", src, dest, from_=from_, chown=chown, chmod=chmod, link=link,
                          exclude=exclude, parents=parents, inline=inline)

    def add(self, src: str | Sequence[str], dest: str, *, chown: str = "", chmod: str | int = "", link: bool = False,
            exclude: Sequence[str] = (), checksum: str = "", keep_git_dir: bool = False,
            unpack: bool | None = None) -> "Stage":
        """Like :meth:`copy`, and sources may be URLs or git repositories; local archives are
        unpacked (``unpack=False`` to keep them)."""
        return self._copy("add", src, dest, chown=chown, chmod=chmod, link=link, exclude=exclude, checksum=checksum,
                          keep_git_dir=keep_git_dir, unpack=unpack)

    def _copy(self, kind: str, src, dest: str, **options) -> "Stage":
        sources = [src] if isinstance(src, str) else list(src)
        for s in sources:
            _str(s, f"{kind}: src")
        _str(dest, f"{kind}: dest")
        from_ = options.pop("from_", None)
        if from_ is not None and not isinstance(from_, (Stage, str)):
            raise DslError(f"{kind}: from_ takes a stage or an image reference, not {type(from_).__name__}")
        fields = {k: v for k, v in options.items() if v not in ("", False, None, ())}
        if "exclude" in fields:
            fields["exclude"] = list(fields["exclude"])
        if "inline" in fields:
            fields["inline"] = [(_str(k, f"{kind}: inline"), _str(v, f"{kind}: inline {k}"))
                                for k, v in dict(fields["inline"]).items()]
        if not sources and "inline" not in fields:
            raise DslError(f"{kind}: nothing to copy")
        if from_ is not None:
            fields["from"] = from_
        text = " ".join([kind.upper(), *sources, *(f"<<{k}" for k, _ in fields.get("inline", ())), dest])
        return self._add(kind, text, src=sources, dest=dest, **fields)

    def workdir(self, path: str) -> "Stage":
        """Set the working directory (created if missing) of later steps and of the image."""
        return self._add("workdir", f"WORKDIR {path}", value=_str(path, "workdir"))

    # -- image config -------------------------------------------------------------------
    def env(self, name: str | Mapping[str, str] | None = None, value: str | None = None, /, **pairs: str) -> "Stage":
        """``.env("A", "1")``, ``.env(A="1", B="2")`` or ``.env({"A": "1"})``: set environment variables."""
        items = _pairs("env", name, value, pairs)
        return self._add("env", "ENV " + " ".join(f"{k}={v}" for k, v in items), pairs=items)

    def label(self, name: str | Mapping[str, str] | None = None, value: str | None = None, /, **pairs: str) -> "Stage":
        """``.label("org.opencontainers.image.title", "app")`` or ``.label({...})``: image labels."""
        items = _pairs("label", name, value, pairs)
        return self._add("label", "LABEL " + " ".join(f"{k}={v}" for k, v in items), pairs=items)

    def user(self, user: str) -> "Stage":
        """Run later steps, and the image, as ``user[:group]``."""
        return self._add("user", f"USER {user}", value=_str(user, "user"))

    def expose(self, *ports: str | int) -> "Stage":
        """``.expose(8080, "53/udp")``."""
        return self._add("expose", "EXPOSE " + " ".join(map(str, ports)), ports=[str(p) for p in ports])

    def volume(self, *paths: str) -> "Stage":
        return self._add("volume", "VOLUME " + " ".join(paths), paths=[_str(p, "volume") for p in paths])

    def entrypoint(self, cmd: str | Sequence[str]) -> "Stage":
        command = _command(cmd, "entrypoint")
        return self._add("entrypoint", "ENTRYPOINT " + _shown(command), cmd=command)

    def cmd(self, cmd: str | Sequence[str]) -> "Stage":
        """The image's default command: a list (exec form) or a string (shell form)."""
        command = _command(cmd, "cmd")
        return self._add("cmd", "CMD " + _shown(command), cmd=command)

    def shell(self, argv: Sequence[str]) -> "Stage":
        """The shell later shell-form commands run with (default ``["/bin/sh", "-c"]``)."""
        return self._add("shell", "SHELL " + _json(list(argv)), argv=[_str(a, "shell") for a in argv])

    def healthcheck(self, cmd: str | Sequence[str] | None, *, interval: float = 0, timeout: float = 0,
                    start_period: float = 0, start_interval: float = 0, retries: int = 0) -> "Stage":
        """``cmd=None`` disables an inherited healthcheck; times in seconds."""
        command = None if cmd is None else _command(cmd, "healthcheck")
        fields = {k: v for k, v in dict(interval=interval, timeout=timeout, start_period=start_period,
                                         start_interval=start_interval, retries=retries).items() if v}
        return self._add("healthcheck", "HEALTHCHECK " + ("NONE" if command is None else _shown(command)),
                         cmd=command, **fields)

    def stopsignal(self, signal: str) -> "Stage":
        return self._add("stopsignal", f"STOPSIGNAL {signal}", value=_str(signal, "stopsignal"))

    def onbuild(self, instruction: str) -> "Stage":
        """A Dockerfile instruction that builds ``FROM`` this image will run (``ONBUILD``)."""
        return self._add("onbuild", f"ONBUILD {instruction}", value=_str(instruction, "onbuild"))

    def maintainer(self, name: str) -> "Stage":
        """The deprecated ``MAINTAINER`` (the ``maintainer`` label)."""
        return self._add("maintainer", f"MAINTAINER {name}", value=_str(name, "maintainer"))

    def arg(self, name: str, default: str | None = None) -> "Stage":
        """Declare build arg ``name`` in this stage (as Dockerfile ``ARG``): later runs see it in
        their environment; its value is ``--build-arg``, else ``default``, else the global :func:`arg`."""
        return self._add("arg", f"ARG {name}" + ("" if default is None else f"={default}"),
                         name=_str(name, "arg"), default=default)


def image(ref: str, *, name: str = "", platform: str = "") -> Stage:
    """A stage starting from registry image ``ref`` (or a ``--build-context`` of that name)."""
    return Stage(_str(ref, "image"), name=name, platform=platform, where=caller())


def scratch(*, name: str = "") -> Stage:
    """A stage starting from an empty filesystem."""
    return Stage("scratch", name=name, where=caller())


def arg(name: str, default: str | None = None) -> str | None:
    """A global build arg's value: ``--build-arg NAME=…``, else ``default``."""
    s = _current()
    s.args.setdefault(_str(name, "arg"), (default, caller()))
    return s.build_args.get(name, default)


def target(name: str, stage: Stage) -> Stage:
    """Declare ``stage`` as target ``name`` (``default`` is built when no ``--target`` is given)."""
    if not isinstance(stage, Stage):
        raise DslError(f"target {name!r}: expected a stage, not {type(stage).__name__}")
    _current().targets[_str(name, "target")] = (stage, caller())
    return stage


# --------------------------------------------------------------------------- mounts


def _mount(kind: str, **options: Any) -> MountDecl:
    opts = tuple((k, v) for k, v in options.items() if v is not None)
    return MountDecl(kind, opts, caller())


def cache(target: str | None = None, *, id: str | None = None, sharing: str | None = None,
          from_: "Stage | str | None" = None, source: str | None = None, mode: int | None = None,
          uid: int | None = None, gid: int | None = None, readonly: bool | None = None) -> MountDecl:
    """A persistent cache directory at ``target`` (id defaults to the target; without a target,
    the working directory), shared by builds; ``sharing`` is ``shared`` (default), ``private`` or
    ``locked``."""
    _choice("cache: sharing", sharing, SHARING_MODES)
    return _mount("cache", target=target, id=id, sharing=sharing, **{"from": from_}, source=source, mode=mode,
                  uid=uid, gid=gid, readonly=readonly)


def secret(id: str, target: str | None = None, *, env: str | None = None, required: bool = False,
           mode: int | None = None, uid: int | None = None, gid: int | None = None) -> MountDecl:
    """Secret ``id`` (given with ``--secret id=…``) as a file (default ``/run/secrets/<id>``) or
    an environment variable (``env=``); never stored in the image or the graph."""
    return _mount("secret", id=id, target=target, env=env, required=required or None, mode=mode, uid=uid, gid=gid)


def bind(target: str | None = None, *, from_: "Stage | str | None" = None, source: str | None = None,
         rw: bool = False) -> MountDecl:
    """Files of the build context (or of ``from_``) at ``target`` (default: the working
    directory, as BuildKit), read-only unless ``rw`` (writes are discarded)."""
    return _mount("bind", target=target, **{"from": from_}, source=source, readwrite=True if rw else None)


def tmpfs(target: str | None = None, *, size: int | str | None = None) -> MountDecl:
    return _mount("tmpfs", target=target, size=size)


def ssh(id: str | None = None, target: str | None = None, *, required: bool = False) -> MountDecl:
    """The SSH agent granted with ``--ssh ID=…`` (default id: ``default``)."""
    return _mount("ssh", id=id, target=target, required=required or None)


# --------------------------------------------------------------------------- helpers


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise DslError(f"{what}: expected a string, got {type(value).__name__}")
    return value


def _choice(what: str, value, allowed: tuple[str, ...]) -> None:
    if value is None:
        return
    if value not in allowed:
        hint = quoted_hint(str(value), allowed) or f" (one of: {', '.join(allowed)})"
        raise DslError(f'{what}: unknown value "{value}"{hint}')


def _command(cmd, what: str):
    if isinstance(cmd, str):
        if not cmd.strip():
            raise DslError(f"{what}: empty command")
        return cmd
    if isinstance(cmd, (list, tuple)) and cmd and all(isinstance(c, str) for c in cmd):
        return list(cmd)
    raise DslError(f"{what}: expected a string (shell form) or a non-empty list of strings (exec form)")


def _pairs(what: str, name, value, pairs: Mapping[str, str]) -> list[tuple[str, str]]:
    items: list[tuple[str, Any]] = []
    if isinstance(name, Mapping):
        items.extend(name.items())
    elif name is not None:
        if value is None:
            raise DslError(f'{what}: "{name}" needs a value')
        items.append((name, value))
    items.extend(pairs.items())
    if not items:
        raise DslError(f"{what}: nothing to set")
    return [(_str(k, what), _str(v, f"{what} {k}")) for k, v in items]


def _json(args) -> str:
    import json

    return json.dumps(list(args))


def _shown(command) -> str:
    return command if isinstance(command, str) else _json(command)
