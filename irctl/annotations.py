"""``--annotation`` (buildx's forms) and an output's ``annotation…`` attributes (BuildKit's), into one
``backend.export.imageset.Annotations``.

``KEY=VALUE`` annotates every image manifest; ``TYPE:KEY=VALUE`` chooses where, ``TYPE`` among
``manifest``, ``manifest-descriptor``, ``index``, ``index-descriptor`` (several, comma-separated);
``TYPE[os/arch]:KEY=VALUE`` limits a manifest one to one platform. On ``--output`` the same reads
``annotation.KEY=VALUE``, ``annotation-TYPE.KEY=VALUE``, ``annotation-TYPE[os/arch].KEY=VALUE``.
"""

from __future__ import annotations

import re

from backend.export.imageset import Annotations
from irctl.errors import UserError

TYPES = ("manifest", "manifest-descriptor", "index", "index-descriptor")
_TYPE = r"[a-z-]+(?:\[[A-Za-z0-9_./-]+\])?"
_PREFIX = re.compile(rf"^({_TYPE}(?:,{_TYPE})*):")
_ONE = re.compile(r"^([a-z-]+)(?:\[([A-Za-z0-9_./-]+)\])?$")
_ATTR = re.compile(r"^annotation(?:-([a-z-]+)(?:\[([A-Za-z0-9_./-]+)\])?)?\.(.+)$")
_HELP = "want [TYPE[PLATFORM]:]KEY=VALUE, TYPE among " + ", ".join(TYPES)


def parse(values: list[str]) -> Annotations:
    """``--annotation`` values (repeatable); a later value of the same key wins."""
    out = Annotations()
    for v in values:
        m = _PREFIX.match(v)
        kinds, rest = (m.group(1).split(","), v[m.end():]) if m and _known(m.group(1)) else (["manifest"], v)
        key, eq, value = rest.partition("=")
        if not eq or not key:
            raise UserError(f"--annotation {v!r}: {_HELP}")
        for kind in kinds:
            t, platform = _ONE.match(kind).groups()
            _put(out, t, platform or "", key, value, f"--annotation {v!r}")
    return out


def merge_output_attrs(given: Annotations, attrs: dict) -> Annotations:
    """``given`` plus the ``annotation…`` attributes of one ``--output`` (those win)."""
    found = [(k, v) for k, v in attrs.items() if k.startswith("annotation")]
    if not found:
        return given
    out = Annotations({k: dict(v) for k, v in given.manifest.items()},
                      {k: dict(v) for k, v in given.manifest_descriptor.items()},
                      dict(given.index), dict(given.index_descriptor))
    for k, v in found:
        m = _ATTR.match(k)
        if not m:
            raise UserError(f"--output {k}={v}: want annotation[-TYPE[PLATFORM]].KEY=VALUE")
        t, platform, key = m.groups()
        _put(out, t or "manifest", platform or "", key, v, f"--output {k}={v}")
    return out


def _known(prefix: str) -> bool:
    return all(_ONE.match(k) and _ONE.match(k).group(1) in TYPES for k in prefix.split(","))


def _put(out: Annotations, kind: str, platform: str, key: str, value: str, where: str) -> None:
    if kind not in TYPES:
        raise UserError(f"{where}: unknown annotation type {kind!r} ({', '.join(TYPES)})")
    if kind in ("index", "index-descriptor"):
        if platform:
            raise UserError(f"{where}: an {kind} annotation applies to every platform; no [PLATFORM]")
        (out.index if kind == "index" else out.index_descriptor)[key] = value
        return
    where_ = out.manifest if kind == "manifest" else out.manifest_descriptor
    where_.setdefault(platform, {})[key] = value
