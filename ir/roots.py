"""How a document's roots are named: one root per (target, platform) a build asked for.

A build of one platform names its root after the target (``default`` when none was named), so a
single-platform document is exactly what it always was; a build of several platforms adds the
platform, ``NAME@os/arch[/variant]`` (``default@linux/arm64``), so every consumer — the solver,
the exporters, ``irctl dump`` — can tell which root is which from the document alone.
"""

from __future__ import annotations

from ir import ops

DEFAULT = "default"


def platform_string(p: ops.Platform) -> str:
    """``os/arch[/variant]``, as ``--platform`` and OCI indexes spell it."""
    return f"{p.os}/{p.architecture}" + (f"/{p.variant}" if p.variant else "")


def root_name(target: str, platform: ops.Platform | None = None) -> str:
    """The root of ``target`` built for ``platform``; ``platform`` is None when the build has only one."""
    name = target or DEFAULT
    return name if platform is None else f"{name}@{platform_string(platform)}"


def target_of(root: str) -> str:
    """The target a root was built for (its name without the ``@platform``)."""
    return root.partition("@")[0]


def default_roots(doc: ops.Document) -> list[str]:
    """What a solve builds when no root is named: ``default`` when the document has it, else every
    root of its one target (each platform of a multi-platform build).  A document of several
    targets has no default: the caller names one."""
    if DEFAULT in doc.roots:
        return [DEFAULT]
    targets = {target_of(name) for name in doc.roots}
    if len(targets) == 1:
        return sorted(doc.roots)
    shown = ", ".join(t if t.isprintable() and t else repr(t) for t in sorted(targets))  # the graph's own text
    raise ValueError(f"the graph has no `default` root and several targets ({shown}): "
                     "name the roots to build")
