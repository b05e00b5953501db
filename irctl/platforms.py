"""Several platforms and several targets in one build: ``--platform`` read as buildx reads it, one
compile per (target, platform) merged into one graph (``ir.merge``, roots named by ``ir.roots``),
and each target's outputs told apart by ``{target}``.

One graph for everything means one solve: a step every platform or target shares (a stage
``FROM --platform=$BUILDPLATFORM``, a common base stage) is one op and runs once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from frontends import Compiled
from ir import ops
from ir.roots import platform_string, root_name
from irctl.errors import UserError
from irctl.options import Output

TARGET_FIELD = "{target}"  # in an output's dest=/name= or a -t name: replaced by each target's name


def host_platform() -> ops.Platform:
    """The machine's platform, as the backend's pull names it (``--platform local``, BUILDPLATFORM)."""
    from backend.oci.layout import Platform  # lazy: only a multi-platform flag needs it

    p = Platform.host()
    return ops.Platform(p.os, p.architecture, p.variant or "")


def parse(values: list[str]) -> list[ops.Platform]:
    """buildx ``--platform``: comma-separated and/or repeated, ``local`` for the host, duplicates
    dropped (the first kept); empty when none was given (the host, as before)."""
    from frontends.common.platforms import parse_platform  # lazy: with the frontends

    found: list[ops.Platform] = []
    for value in values:
        for text in value.split(","):
            text = text.strip()
            if not text:
                raise UserError(f"--platform {value!r}: empty platform")
            try:
                p = host_platform() if text == "local" else parse_platform(text)
            except ValueError as e:
                raise UserError(f"--platform {value!r}: {e}") from None
            if p not in found:
                found.append(p)
    return found


def parse_targets(values: list[str]) -> list[str]:
    """``--target`` repeated (or comma-separated): the stages to build; ``[""]`` (the default) when none."""
    names = [t.strip() for v in values for t in v.split(",")]
    if any(not t for t in names) and len(names) > 1:
        raise UserError(f"--target {','.join(values)!r}: empty target name")
    return list(dict.fromkeys(names)) or [""]


@dataclass(frozen=True)
class Root:
    """One root of the merged graph: which target, which platform, and its name in the document."""

    target: str  # "" = the default stage
    platform: ops.Platform
    name: str

    @property
    def platform_text(self) -> str:
        return platform_string(self.platform)


def roots(targets: list[str], platforms: list[ops.Platform]) -> list[Root]:
    """The roots of a build, target by target then in ``--platform`` order (the images' order)."""
    several = len(platforms) > 1
    plats = platforms or [host_platform()]
    return [Root(t, p, root_name(t, p if several else None)) for t in targets for p in plats]


def compile_all(opts, targets: list[str], platforms: list[ops.Platform], cache_root: Path) -> tuple[Compiled, list[Root]]:
    """Compile ``opts`` once per (target, platform) and merge the graphs (``ir.merge``); each warning
    (and each build check, for ``--check``) once."""
    from ir.merge import label_platform, merge  # lazy: with the compile
    from irctl.compiling import compile_file  # lazy: the frontends

    wanted = roots(targets, platforms)
    build = host_platform()
    parts, warnings, checks = [], {}, {}
    for r in wanted:
        one = dataclasses.replace(opts, target=r.target, platform=r.platform, build_platform=build)
        compiled = compile_file(one, cache_root)
        doc = label_platform(compiled.document, r.platform) if len(platforms) > 1 else compiled.document
        parts.append((r.name, doc))
        warnings.update(dict.fromkeys(compiled.warnings))
        checks.update(dict.fromkeys(compiled.checks))
    try:
        document = merge(parts)
    except ValueError as e:  # two frontends' graphs that cannot be one (never for ours)
        raise UserError(str(e)) from None
    return Compiled(document, tuple(warnings), tuple(checks)), wanted


def outputs_by_target(outputs: list[Output], tags: list[str], targets: list[str]) -> dict[str, tuple[list[Output], list[str]]]:
    """Each target's outputs and tags (``per_target``), worked out before the build so a clash is refused at once."""
    return {t: per_target(outputs, tags, t, several=len(targets) > 1) for t in targets}


def per_target(outputs: list[Output], tags: list[str], target: str, several: bool) -> tuple[list[Output], list[str]]:
    """``outputs`` and ``tags`` for ``target``: ``{target}`` replaced.  With several targets an
    output or tag without it would be written by each in turn, so that is refused."""
    def fill(text: str, what: str) -> str:
        if several and TARGET_FIELD not in text:
            raise UserError(f"{what} {text!r} would be overwritten by each target: put {TARGET_FIELD} in it "
                            "(replaced by the target's name)")
        return text.replace(TARGET_FIELD, target or "default")

    filled = []
    for out in outputs:
        attrs = dict(out.attrs)
        for key in ("dest", "name"):
            if key in attrs:
                attrs[key] = fill(attrs[key], f"--output {key}=")
        if several and not ({"dest", "name"} & attrs.keys()) and not tags:
            raise UserError(f"--output type={out.type} would be written by each target: give it "
                            f"dest= or name= holding {TARGET_FIELD}")
        filled.append(Output(out.type, attrs))
    return filled, [fill(t, "-t") for t in tags]


def images_by_target(wanted: list[Root], snapshots: dict) -> list[tuple[str, list[tuple[str, object]]]]:
    """Per target (in ``--target`` order), its ``(platform, snapshot)`` images in ``--platform``
    order: what ``irctl.exporting.export`` takes."""
    by_target: dict[str, list[tuple[str, object]]] = {}
    for r in wanted:
        by_target.setdefault(r.target, []).append((r.platform_text, snapshots[r.name]))
    return list(by_target.items())


def all_layers(snapshots: dict):
    """What every root needs, as one snapshot-like value for ``caching.export_caches`` (mode=min)."""
    from types import SimpleNamespace

    return SimpleNamespace(layers=list(dict.fromkeys(p for s in snapshots.values() for p in s.layers)))
