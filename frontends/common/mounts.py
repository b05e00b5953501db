"""``RUN --mount=…``: the flag value as a typed :class:`MountSpec`, with BuildKit's rules.

The value is one CSV record (Go ``encoding/csv``; read with the LALR grammar ``mount_csv.lark``) of
``key=value`` fields and a few bare keys.  Keys, their aliases and their checks follow BuildKit
(``instructions/commands_runmount.go``); the defaults BuildKit applies when it lowers a mount
(``dockerfile2llb``) are applied when :func:`parse_mount` is given ``ssh_index``:

=========  =================================================================================
type       ``bind`` (default) · ``cache`` · ``tmpfs`` · ``secret`` · ``ssh``
read-only  bind, secret and ssh mounts are read-only unless ``rw``; cache and tmpfs are writable
cache      ``id`` defaults to the target as written, cleaned (:func:`cache_id`)
secret     ``id`` defaults to ``source`` (alias) or the target's base name; the target defaults to
           ``/run/secrets/<id>`` unless ``env=NAME`` exposes it as an environment variable only
ssh        the target defaults to ``/run/buildkit/ssh_agent.<N>`` where N counts the ssh mounts
           of the RUN from 0
=========  =================================================================================

Every other default (sharing ``shared``, the secret's mode 0400, the ssh id ``default`` …) is the
IR's, in ``ir/ops.py``: an option not given stays ``None``/empty here and is left out when
:func:`frontends.common.stage.lower_mount` makes the ``ops.Mount``.

TOML recipes and Python build files give the same keys as typed values:
:func:`mount_from_options` reads them with the same checks, without going through text.

A value containing ``$`` cannot be checked before expansion: it is kept as written (listed in
``deferred``); call :func:`parse_mount` again with ``expand=`` once the build args are known.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable

from frontends.errors import FrontendError, did_you_mean
from ir.ops import MOUNT_TYPES, SHARING_MODES

MOUNT_KEYS = (
    "type", "from", "source", "target", "readonly", "id", "sharing", "required", "mode", "uid",
    "gid", "src", "dst", "destination", "ro", "rw", "readwrite", "size", "env",
)
_KEYS = frozenset(MOUNT_KEYS)


class MountError(FrontendError):
    """Bad mount: ``offset`` is the index in the ``--mount`` value where the problem starts,
    ``key`` the key at fault (for a recipe, which has no text to point into)."""

    def __init__(self, message: str, offset: int = 0, length: int = 0, key: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.length = length
        self.key = key


@dataclass(frozen=True)
class MountSpec:
    """One mount of a run, from any frontend: the only frontend-side shape of a mount, lowered
    once (:func:`frontends.common.stage.lower_mount`) to the exec op's ``ops.Mount``.  BuildKit's
    ``instructions.Mount`` with its aliases resolved (``src`` → ``source``, ``dst``/``destination``
    → ``target``, ``ro``/``rw`` → ``readonly``) and, when made with ``ssh_index``, BuildKit's
    Dockerfile defaults applied (module docstring).  ``target`` may be relative (to the WORKDIR);
    values listed in ``deferred`` still hold ``$variables``; an option left ``None`` takes the IR's
    default."""

    type: str = "bind"
    target: str = ""
    source: str = ""
    from_: str = ""
    readonly: bool = True
    id: str = ""
    sharing: str = ""
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None  # tmpfs size limit in bytes
    required: bool = False
    env: str | None = None  # secret exposed as this environment variable
    deferred: tuple[str, ...] = ()  # keys whose value awaits variable expansion
    explicit: tuple[str, ...] = ()  # canonical keys given in the flag


@lru_cache(maxsize=1)
def _csv_parser():
    from lark import Lark

    return Lark.open_from_package(
        "frontends.common", "mount_csv.lark", start="csv_record", parser="lalr",
        propagate_positions=True,
    )


def split_csv(value: str) -> list[tuple[str, int]]:
    """The fields of one Go ``encoding/csv`` record, each with its offset in ``value``."""
    if value == "":
        raise MountError("failed to parse csv mounts: EOF")
    if '"' not in value and "\n" not in value and "\r" not in value:
        # without quotes a Go CSV record is exactly the comma-separated pieces
        fields, offset = [], 0
        for piece in value.split(","):
            fields.append((piece, offset))
            offset += len(piece) + 1
        return fields
    from lark.exceptions import UnexpectedInput

    try:
        tree = _csv_parser().parse(value)
    except UnexpectedInput as e:
        i = (getattr(e, "column", 1) or 1) - 1
        if i < len(value) and value[i] == '"' and i > 0 and value[i - 1] != ",":
            msg = 'bare " in non-quoted-field'
        else:
            msg = 'extraneous or missing " in quoted-field'
        raise MountError(f"failed to parse csv mounts: {msg}", i, 1) from None
    fields: list[tuple[str, int]] = []
    offset = 0
    for child in tree.children:
        if child.data == "csv_empty":
            fields.append(("", offset))
            offset += 1
            continue
        tok = child.children[0]
        text = tok[1:-1].replace('""', '"') if child.data == "csv_quoted" else str(tok)
        fields.append((text, tok.start_pos))
        offset = tok.end_pos + 1
    return fields


_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def _bool(key: str, value: str, at: int) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise MountError(f"invalid value for {key}: {value}", at, len(value), key)


def _uint(value: str, base: int, what: str, at: int) -> int:
    digits = "01234567" if base == 8 else "0123456789"
    if not value or any(c not in digits for c in value) or int(value, base) >= 1 << 32:
        raise MountError(f"invalid value {value} for {what}", at, len(value), what)
    return int(value, base)


_RAM = re.compile(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")


def ram_in_bytes(value: str) -> int:
    """docker/go-units ``RAMInBytes``: ``64m`` → 67108864 (binary multipliers)."""
    m = _RAM.match(value)
    if not m:
        raise ValueError(value)
    mult = 1024 ** " kmgtp".index((m.group(2) or " ").lower())
    return int(float(m.group(1)) * mult)


_CANON = {"src": "source", "dst": "target", "destination": "target", "ro": "readonly",
          "rw": "readwrite"}


class _Assembly:
    """The fields of one mount being read, key by key, with BuildKit's per-key checks.  Fed by
    :func:`parse_mount` (fields of the flag text, with offsets) or by :func:`mount_from_options`
    (a recipe's typed values, no offsets); both end in :meth:`finish`, so both say the same."""

    def __init__(self, expand: Callable[[str], str] | None) -> None:
        self.expand = expand
        self.m: dict = {"type": "bind"}
        self.ro_auto = True
        self.deferred: list[str] = []
        self.explicit: list[str] = []
        self.where: dict[str, tuple[int, int]] = {}

    def bare(self, key: str, field: str, at: int) -> None:
        """A key without ``=value`` (flag text only): ``ro``, ``rw``, ``required``."""
        m = self.m
        if key in ("readonly", "ro"):
            m["readonly"], self.ro_auto = True, False
        elif key in ("readwrite", "rw"):
            m["readonly"], self.ro_auto = False, False
        elif key == "required":
            if m["type"] not in ("secret", "ssh"):
                raise MountError(f"unexpected key '{key}' for mount type '{m['type']}'", at, len(field), key)
            m["required"] = True
        else:
            raise MountError(
                f"invalid field '{field}' must be a key=value pair"
                + (did_you_mean(key, MOUNT_KEYS) if key not in _KEYS else ""),
                at, len(field), key,
            )
        self.explicit.append(_CANON.get(key, key))

    def set(self, key: str, val, field: str = "", at: int = 0) -> None:
        """``key=val``; ``val`` is text, or (from a recipe) a bool or an int."""
        m = self.m
        canon = _CANON.get(key, key)
        vat = at + len(key) + 1
        self.where[canon] = (at, len(field))
        if key not in _KEYS:
            raise MountError(
                f"unexpected key '{key}' in '{field}'" + did_you_mean(key, MOUNT_KEYS), at, len(key), key
            )
        self.explicit.append(canon)
        if key in ("mode", "uid", "gid") and type(val) is int:
            if not 0 <= val < 1 << 32:
                raise MountError(f"invalid value {val:o} for mode" if key == "mode" else
                                 f"invalid value {val} for {key}", vat, 0, key)
            m[key] = val
            return
        if not isinstance(val, str):
            val = ("true" if val else "false") if isinstance(val, bool) else str(val)
        if "$" in val:
            if self.expand is not None:
                val = self.expand(val)
            elif key == "from" and re.search(r"\$.", val):
                raise MountError(
                    f"'{key}' doesn't support variable expansion, define alias stage instead",
                    vat, len(val), key,
                )
            else:
                self.deferred.append(canon)
                if canon in ("target", "source", "from", "id", "env"):
                    m[{"from": "from_"}.get(canon, canon)] = val
                return
        if key == "type":
            t = val.lower()
            if t not in MOUNT_TYPES:
                raise MountError(f'unsupported mount type "{val}"' + did_you_mean(val, MOUNT_TYPES),
                                 vat, len(val), key)
            m["type"] = t
        elif key == "from":
            m["from_"] = val
        elif canon in ("source", "target", "id"):
            m[canon] = val
        elif canon == "readonly":
            m["readonly"], self.ro_auto = _bool(key, val, vat), False
        elif canon == "readwrite":
            m["readonly"], self.ro_auto = not _bool(key, val, vat), False
        elif key in _ONLY_FOR and m["type"] not in _ONLY_FOR[key]:
            raise MountError(f"unexpected key '{key}' for mount type '{m['type']}'", at, len(key), key)
        elif key == "required":
            m["required"] = _bool(key, val, vat)
        elif key == "size":
            try:
                m["size"] = ram_in_bytes(val)
            except ValueError:
                raise MountError(f"invalid value for {key}: {val}", vat, len(val), key) from None
        elif key == "sharing":
            sharing = val.lower()
            if sharing not in SHARING_MODES:
                raise MountError(f'unsupported sharing value "{val}"' + did_you_mean(val, SHARING_MODES),
                                 vat, len(val), key)
            m["sharing"] = sharing
        elif key == "mode":
            m["mode"] = _uint(val, 8, "mode", vat)
        elif key in ("uid", "gid"):
            m[key] = _uint(val, 10, key, vat)
        elif key == "env":
            m["env"] = val

    def finish(self, ssh_index: int | None) -> "MountSpec":
        m = self.m
        if self.ro_auto:
            m["readonly"] = m["type"] not in ("cache", "tmpfs")
        try:
            _validate(m)
        except MountError as e:
            e.offset, e.length = self.where.get(e.key, (0, 0))
            raise
        m["deferred"], m["explicit"] = tuple(self.deferred), tuple(self.explicit)
        if ssh_index is not None:
            _defaults(m, ssh_index)
        return MountSpec(**m)


# the mount types a key is allowed for (any other type: "unexpected key")
_ONLY_FOR = {"required": ("secret", "ssh"), "size": ("tmpfs",), "env": ("secret",)}


def parse_mount(
    value: str, expand: Callable[[str], str] | None = None, *, ssh_index: int | None = None
) -> MountSpec:
    """Parse one ``--mount`` value.  Raises :class:`MountError` with an offset into ``value``.
    With ``ssh_index`` (the number of ssh mounts before this one in its RUN) BuildKit's
    defaults are applied too (module docstring)."""
    fields = _Assembly(expand)
    for field, at in split_csv(value):
        key, eq, val = field.partition("=")
        key = key.lower()
        if eq:
            fields.set(key, val, field, at)
        else:
            fields.bare(key, field, at)
    return fields.finish(ssh_index)


def mount_from_options(type: str, options: Iterable[tuple[str, object]], expand: Callable[[str], str], *,
                       ssh_index: int) -> MountSpec:
    """A recipe's mount (TOML table, Python DSL call): ``type`` and ``key=value`` options named
    as in ``--mount``, values typed (str, bool, int), checked and defaulted as :func:`parse_mount`
    does.  A :class:`MountError` names the option at fault in ``key`` (``type`` for a rule
    about the whole mount)."""
    fields = _Assembly(expand)
    fields.set("type", type)
    for key, val in options:
        fields.set(key, val)
    return fields.finish(ssh_index)


def _validate(m: dict) -> None:
    typ = m["type"]
    if typ not in ("secret", "ssh", "cache"):
        for attr in ("mode", "uid", "gid"):
            if m.get(attr) is not None:
                raise MountError(f'{attr} not allowed for "{typ}" type mounts', key=attr)
    if typ == "secret":
        if m.get("from_"):
            raise MountError("secret mount should not have a from", key="from")
        if m.get("sharing"):
            raise MountError("secret mount should not define sharing", key="sharing")
        if not (m.get("source") or m.get("target") or m.get("id") or m.get("env")):
            raise MountError("invalid secret mount. one of source, target required", key="type")
        if m.get("source") and m.get("id"):
            raise MountError("both source and id can't be set", key="id")
    if m.get("sharing") and typ != "cache":
        raise MountError(f"invalid cache sharing set for {typ} mount", key="sharing")


def _defaults(m: dict, ssh_index: int) -> None:
    """BuildKit's Dockerfile defaults that are not the IR's own (those, such as the secret's
    mode 0400, are left unset here and filled in by ``ir.ops``)."""
    typ = m["type"]
    if typ == "secret":
        ident = m.get("source") or m.get("id") or posixpath.basename(m.get("target", ""))
        target = m.get("target", "")
        if not target and m.get("env") is None:
            target = "/run/secrets/" + posixpath.basename(ident)
        m.update(id=ident, source="", target=target)
    elif typ == "ssh":
        m["target"] = m.get("target") or f"/run/buildkit/ssh_agent.{ssh_index}"


def cache_id(m: MountSpec, mount_point: str) -> str:
    """BuildKit's cache id: the ``id`` given, else the target as written, cleaned (``.`` when
    there is none); ``id=`` given empty stands for the target as written, or, that too empty,
    for ``mount_point`` (the absolute path the mount lands on)."""
    if "id" not in m.explicit:
        return posixpath.normpath(m.target)
    return m.id or m.target or mount_point
