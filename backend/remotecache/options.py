"""``--cache-from`` and ``--cache-to`` values, with buildx's spellings and defaults.

``type=registry,ref=REG/REPO:TAG`` (or a bare reference), ``type=local,dest=DIR`` / ``src=DIR``
(optionally ``tag=``), ``type=inline``; ``mode=min|max``, ``compression=gzip|zstd|uncompressed``,
``compression-level=``, ``oci-mediatypes=``, ``image-manifest=``, ``ignore-error=``.  irctl's own
``mounts=ID,ID…`` (quoted as buildx quotes a value with commas: ``"mounts=/var/cache/apt,/root/.npm"``,
or ``mounts=`` given several times) names the ``RUN --mount=type=cache`` directories to carry, by the
cache id BuildKit gives them (``id=``, else the target path); ``mounts=*`` carries every one the
build used.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass

from backend.errors import BackendError

TYPES = ("registry", "local", "inline")
MODES = ("min", "max")
COMPRESSIONS = {"gzip": "gzip", "zstd": "zstd", "uncompressed": "none"}
LEVELS = {"gzip": 9, "zstd": 22}  # compression-level's range, as buildx has it
ALL_MOUNTS = "*"


class CacheOptionError(BackendError):
    """A ``--cache-from``/``--cache-to`` value irctl cannot use; ``str()`` names the value."""


@dataclass(frozen=True)
class CacheImport:
    """Where one ``--cache-from`` reads: a registry reference, or an OCI layout dir and its tag."""

    type: str  # registry | local
    ref: str = ""
    path: str = ""
    tag: str = "latest"

    @property
    def name(self) -> str:
        return self.ref if self.type == "registry" else f"{self.path}:{self.tag}"


@dataclass(frozen=True)
class CacheExport:
    """Where and what one ``--cache-to`` writes."""

    type: str  # registry | local | inline
    ref: str = ""
    path: str = ""
    tag: str = "latest"
    mode: str = "min"
    compression: str = "gzip"  # gzip | zstd | none (backend.oci.compression's names)
    level: int | None = None
    oci_mediatypes: bool = True
    ignore_error: bool = False
    mounts: tuple[str, ...] = ()
    insecure: bool = False

    @property
    def name(self) -> str:
        return {"registry": self.ref, "local": f"{self.path}:{self.tag}"}.get(self.type, "inline")


def _fields(text: str, option: str) -> list[tuple[str, str]]:
    if "=" not in text:  # a bare reference: type=registry,ref=TEXT
        return [("type", "registry"), ("ref", text)]
    try:
        parts = next(csv.reader([text]))
    except (csv.Error, StopIteration) as e:
        raise CacheOptionError(f"{option} {text!r}: {e}") from None
    out = []
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep:
            raise CacheOptionError(f"{option} {text!r}: expected key=value pairs, got {part!r}")
        out.append((key.strip().lower(), value.strip()))
    return out


def _bool(value: str, option: str, key: str) -> bool:
    if value.lower() in ("true", "1", ""):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise CacheOptionError(f"{option}: {key}={value!r}: expected true or false")


def _type(f: dict[str, str], option: str, text: str, allowed: tuple[str, ...]) -> str:
    kind = f.get("type", "registry" if "ref" in f else "local" if ("src" in f or "dest" in f) else "")
    if kind not in allowed:
        raise CacheOptionError(f"{option} {text!r}: type {kind or '(none)'!r} is not supported "
                               f"(irctl supports {', '.join(allowed)})")
    return kind


def _known(f: dict[str, str], option: str, text: str, known: set[str]) -> None:
    unknown = sorted(set(f) - known)
    if unknown:
        raise CacheOptionError(f"{option} {text!r}: unknown attribute {unknown[0]!r}")


def parse_cache_from(text: str) -> CacheImport:
    option = "--cache-from"
    pairs = _fields(text, option)
    f = dict(pairs)
    kind = _type(f, option, text, ("registry", "local"))
    if kind == "registry" and not f.get("ref"):
        raise CacheOptionError(f"{option} {text!r}: type=registry needs ref=")
    if kind == "local" and not f.get("src"):
        raise CacheOptionError(f"{option} {text!r}: type=local needs src=")
    _known(f, option, text, {"type", "ref", "src", "tag"})
    if kind == "registry":
        return CacheImport("registry", ref=f["ref"])
    return CacheImport("local", path=f["src"], tag=f.get("tag") or "latest")


def parse_cache_to(text: str) -> CacheExport:
    option = "--cache-to"
    pairs = _fields(text, option)
    f = dict(pairs)
    kind = _type(f, option, text, TYPES)
    mode = f.get("mode", "min")
    if mode not in MODES:
        raise CacheOptionError(f"{option}: mode={mode!r}: expected min or max")
    if kind == "inline" and mode != "min":
        raise CacheOptionError(f"{option}: type=inline holds only what the image has: mode=max needs "
                               "type=registry or type=local")
    compression = f.get("compression", "gzip")
    if compression not in COMPRESSIONS:
        raise CacheOptionError(f"{option}: compression={compression!r}: expected gzip, zstd or uncompressed")
    level = None
    if f.get("compression-level"):
        try:
            level = int(f["compression-level"])
        except ValueError:
            raise CacheOptionError(f"{option}: compression-level={f['compression-level']!r}: not a number") from None
        top = LEVELS.get(compression)
        if top is not None and not 0 <= level <= top:
            raise CacheOptionError(f"{option}: compression-level={level}: {compression} takes 0 to {top}")
    mounts: list[str] = []
    for key, value in pairs:
        if key == "mounts":
            mounts += [m.strip() for m in value.split(",") if m.strip()]
    if mounts and kind == "inline":
        raise CacheOptionError(f"{option}: type=inline cannot carry cache mounts (mounts=): "
                               "use type=registry or type=local")
    _known(f, option, text, {"type", "ref", "dest", "tag", "mode", "compression", "compression-level",
                             "force-compression", "oci-mediatypes", "image-manifest", "ignore-error", "mounts",
                             "registry.insecure"})
    common = dict(mode=mode, compression=COMPRESSIONS[compression], level=level,
                  oci_mediatypes=_bool(f.get("oci-mediatypes", "true"), option, "oci-mediatypes"),
                  ignore_error=_bool(f.get("ignore-error", "false"), option, "ignore-error"),
                  mounts=tuple(dict.fromkeys(mounts)),
                  insecure=_bool(f.get("registry.insecure", "false"), option, "registry.insecure"))
    if kind == "registry":
        if not f.get("ref"):
            raise CacheOptionError(f"{option} {text!r}: type=registry needs ref=")
        return CacheExport("registry", ref=f["ref"], **common)  # type: ignore[arg-type]
    if kind == "local":
        if not f.get("dest"):
            raise CacheOptionError(f"{option} {text!r}: type=local needs dest=")
        return CacheExport("local", path=f["dest"], tag=f.get("tag") or "latest", **common)  # type: ignore[arg-type]
    return CacheExport("inline", **common)  # type: ignore[arg-type]
