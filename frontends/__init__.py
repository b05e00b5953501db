"""Frontends turn what a person writes into an IR graph; this module is their common contract.

A frontend is any object with ``name``, ``patterns`` (file names or suffixes it claims) and
``compile(request, resolver) -> Compiled``.  Frontends are found through the ``irctl.frontends``
entry-point group — the built-in ones register there too — so a third party adds one by installing
a package.  A frontend never executes anything on the host: what it needs to know about base images
(digest, Env, WorkingDir, OnBuild, history) it asks the ``ImageResolver`` it is handed, which the
CLI wires to the backend (BuildKit's ResolveImageConfig split).

A frontend whose build files are programs (the Python DSL) declares ``executes_code = True``
(:func:`executes_code`; default False) and runs them in a sandbox itself, as BuildKit runs a
``# syntax=`` frontend in a container.  irctl never chooses such a frontend by a ``# syntax=`` line
or for a file it merely finds in the context — both come from the untrusted side — only by
``--frontend NAME`` or an explicit ``-f FILE`` whose name it claims.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import TYPE_CHECKING, Protocol

from frontends.errors import FrontendError  # noqa: F401 (the contract's error, defined once)

if TYPE_CHECKING:
    from ir import ops


def _default_platform() -> ops.Platform:
    """The host platform, imported on first use: the no-op fast path reads build files through
    ``frontends.files`` and must not pay for importing the IR (msgspec) just to load this package."""
    from ir import ops  # lazy: ir.ops costs ~33 ms to import, this package ~13 ms (-X importtime)

    return ops.Platform()


@dataclass(frozen=True)
class ResolvedImage:
    """A base image as a frontend sees it."""

    ref: str  # normalised reference, e.g. "127.0.0.1:5000/busybox:latest"
    digest: str  # manifest digest ("" when the image has none, e.g. scratch)
    config: dict  # the whole OCI image config JSON: {"config": {...}, "history": [...], ...}
    platform: ops.Platform = field(default_factory=_default_platform)


class ImageResolver(Protocol):
    def resolve_image(self, ref: str, platform: ops.Platform) -> ResolvedImage:
        """Digest and config of a registry image."""
        ...

    def resolve_oci_layout(self, name: str, ref: str, platform: ops.Platform) -> ResolvedImage:
        """Digest and config of an image in the OCI layout granted as ``name``."""
        ...


@dataclass(frozen=True)
class NamedContext:
    """``--build-context NAME=VALUE``: ``kind`` is ``local`` (a directory granted as NAME),
    ``image`` (VALUE is a reference) or ``oci_layout`` (a layout granted as NAME, VALUE a tag)."""

    kind: str
    value: str = ""


@dataclass(frozen=True)
class BuildRequest:
    """Everything a frontend may read: the source text and the user's options. No file access."""

    source: bytes  # the build file's bytes
    filename: str = "Dockerfile"  # as the user named it; used in error messages and the source map
    target: str = ""  # stage/target to build; "" = the last / default
    build_args: dict[str, str] = field(default_factory=dict)
    contexts: dict[str, NamedContext] = field(default_factory=dict)  # named contexts
    context_name: str = "context"  # name of the main local context granted by the CLI
    ignore_patterns: tuple[str, ...] = ()  # the .dockerignore patterns, already read by the CLI
    platform: ops.Platform = field(default_factory=_default_platform)  # target platform
    build_platform: ops.Platform = field(default_factory=_default_platform)
    # BuildKit's exec meta of every RUN (`--add-host`, `--shm-size`, `--ulimit`), already in the IR's
    # normal form (``ir.normal``): a frontend passes them through (``exec_sandbox``), never reads them
    extra_hosts: tuple[ops.HostIP, ...] = ()
    shm_size: int = 0
    ulimits: tuple[ops.Ulimit, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)  # `--label`: set on the target's image, over its LABELs

    def exec_sandbox(self) -> dict:
        """The keyword arguments every ``run`` of this build takes (``ir.builder.State.run``)."""
        return {"extra_hosts": self.extra_hosts, "shm_size": self.shm_size, "ulimits": self.ulimits}


@dataclass(frozen=True)
class Compiled:
    """A frontend's output: the graph, and warnings (already located, one line each) to print."""

    document: ops.Document
    warnings: tuple[str, ...] = ()
    checks: tuple = ()  # the build checks among them as ``frontends.errors.SourceWarning`` (``--check``)


class Frontend(Protocol):
    name: str
    patterns: tuple[str, ...]  # fnmatch patterns on the file name, e.g. ("Dockerfile", "*.Dockerfile")
    executes_code: bool  # optional, default False: build files are programs this frontend runs

    def compile(self, request: BuildRequest, resolver: ImageResolver) -> Compiled:
        ...


def executes_code(frontend: object) -> bool:
    """Whether ``frontend`` runs its build files as programs (a missing attribute means no)."""
    return getattr(frontend, "executes_code", False) is not False


def available() -> dict[str, tuple[Frontend, str]]:
    """Installed frontends by name, each with the distribution that provides it."""
    from importlib.metadata import entry_points

    found: dict[str, tuple[Frontend, str]] = {}
    for ep in entry_points(group="irctl.frontends"):
        try:
            frontend = ep.load()
        except Exception as e:  # a broken plugin must not take the CLI down
            raise FrontendError(f"frontend {ep.name!r} from {ep.value} failed to load: {e}") from None
        dist = ep.dist.name if ep.dist is not None else "?"
        found[ep.name] = (frontend, dist)
    return found


def for_file(filename: str, frontends: dict[str, tuple[Frontend, str]]) -> Frontend | None:
    """The frontend claiming ``filename`` by name or suffix; exact names beat patterns."""
    base = PurePath(filename).name
    best = None
    for frontend, _dist in frontends.values():
        for pat in frontend.patterns:
            if pat == base:
                return frontend
            if best is None and fnmatch.fnmatchcase(base, pat):
                best = frontend
    return best
