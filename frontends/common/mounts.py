"""``RUN --mount=…``: the flag value as a typed :class:`MountSpec`, with BuildKit's rules.

The value is one CSV record (Go ``encoding/csv``; read with the LALR grammar ``mount_csv.lark``) of
``key=value`` fields and a few bare keys.  Keys, their aliases and their checks follow BuildKit
(``instructions/commands_runmount.go``); the defaults BuildKit applies when it lowers a mount
(``dockerfile2llb``) are applied by :func:`apply_defaults`:

=========  =================================================================================
type       ``bind`` (default) · ``cache`` · ``tmpfs`` · ``secret`` · ``ssh``
read-only  bind, secret and ssh mounts are read-only unless ``rw``; cache and tmpfs are writable
cache      ``id`` defaults to the target as written; ``sharing`` defaults to ``shared``
secret     ``id`` defaults to ``source`` (alias) or the target's base name; the target defaults to
           ``/run/secrets/<id>`` unless ``env=NAME`` exposes it as an environment variable only;
           mode 0400
ssh        ``id`` defaults to ``default``; the target to ``/run/buildkit/ssh_agent.<N>`` where N
           counts the ssh mounts of the RUN from 0; mode 0600
=========  =================================================================================

A value containing ``$`` cannot be checked before expansion: it is kept as written (listed in
``deferred``); call :func:`parse_mount` again with ``expand=`` once the build args are known.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from frontends.errors import FrontendError, did_you_mean

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
SHARING_MODES = ("shared", "private", "locked")
MOUNT_KEYS = (
    "type", "from", "source", "target", "readonly", "id", "sharing", "required", "mode", "uid",
    "gid", "src", "dst", "destination", "ro", "rw", "readwrite", "size", "env",
)
_KEYS = frozenset(MOUNT_KEYS)


class MountError(FrontendError):
    """Bad ``--mount`` value; ``offset`` is the index in the value where the problem starts."""

    def __init__(self, message: str, offset: int = 0, length: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.length = length


@dataclass(frozen=True)
class MountSpec:
    """One ``RUN --mount``: BuildKit's ``instructions.Mount`` with its aliases resolved (``src`` →
    ``source``, ``dst``/``destination`` → ``target``, ``ro``/``rw`` → ``readonly``) and, when made
    by the parser, BuildKit's defaults applied (module docstring).  ``target`` may be relative (to
    the WORKDIR) and values listed in ``deferred`` still hold ``$variables``."""

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
    raise MountError(f"invalid value for {key}: {value}", at, len(value))


def _uint(value: str, base: int, what: str, at: int) -> int:
    digits = "01234567" if base == 8 else "0123456789"
    if not value or any(c not in digits for c in value) or int(value, base) >= 1 << 32:
        raise MountError(f"invalid value {value} for {what}", at, len(value))
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


def parse_mount(
    value: str, expand: Callable[[str], str] | None = None, *, ssh_index: int | None = None
) -> MountSpec:
    """Parse one ``--mount`` value.  Raises :class:`MountError` with an offset into ``value``.
    With ``ssh_index`` (the number of ssh mounts before this one in its RUN) the defaults of
    :func:`apply_defaults` are applied too."""
    m: dict = {"type": "bind"}
    ro_auto = True
    deferred: list[str] = []
    explicit: list[str] = []
    where: dict[str, tuple[int, int]] = {}
    for field, at in split_csv(value):
        key, eq, val = field.partition("=")
        key = key.lower()
        vat = at + len(key) + 1
        if not eq:
            if key in ("readonly", "ro"):
                m["readonly"], ro_auto = True, False
            elif key in ("readwrite", "rw"):
                m["readonly"], ro_auto = False, False
            elif key == "required":
                if m["type"] not in ("secret", "ssh"):
                    raise MountError(f"unexpected key '{key}' for mount type '{m['type']}'", at, len(field))
                m["required"] = True
            else:
                raise MountError(
                    f"invalid field '{field}' must be a key=value pair"
                    + (did_you_mean(key, MOUNT_KEYS) if key not in _KEYS else ""),
                    at, len(field),
                )
            explicit.append(_CANON.get(key, key))
            continue
        canon = _CANON.get(key, key)
        where[canon] = (at, len(field))
        if key not in _KEYS:
            raise MountError(
                f"unexpected key '{key}' in '{field}'" + did_you_mean(key, MOUNT_KEYS), at, len(key)
            )
        explicit.append(canon)
        if "$" in val:
            if expand is not None:
                val = expand(val)
            elif key == "from" and re.search(r"\$.", val):
                raise MountError(
                    f"'{key}' doesn't support variable expansion, define alias stage instead",
                    vat, len(val),
                )
            else:
                deferred.append(canon)
                if canon in ("target", "source", "from", "id", "env"):
                    m[{"from": "from_"}.get(canon, canon)] = val
                continue
        if key == "type":
            t = val.lower()
            if t not in MOUNT_TYPES:
                raise MountError(f'unsupported mount type "{val}"' + did_you_mean(val, MOUNT_TYPES),
                                 vat, len(val))
            m["type"] = t
        elif key == "from":
            m["from_"] = val
        elif canon == "source":
            m["source"] = val
        elif canon == "target":
            m["target"] = val
        elif canon == "readonly":
            m["readonly"], ro_auto = _bool(key, val, vat), False
        elif canon == "readwrite":
            m["readonly"], ro_auto = not _bool(key, val, vat), False
        elif key == "required":
            if m["type"] not in ("secret", "ssh"):
                raise MountError(f"unexpected key '{key}' for mount type '{m['type']}'", at, len(key))
            m["required"] = _bool(key, val, vat)
        elif key == "size":
            if m["type"] != "tmpfs":
                raise MountError(f"unexpected key '{key}' for mount type '{m['type']}'", at, len(key))
            try:
                m["size"] = ram_in_bytes(val)
            except ValueError:
                raise MountError(f"invalid value for {key}: {val}", vat, len(val)) from None
        elif key == "id":
            m["id"] = val
        elif key == "sharing":
            s = val.lower()
            if s not in SHARING_MODES:
                raise MountError(f'unsupported sharing value "{val}"' + did_you_mean(val, SHARING_MODES),
                                 vat, len(val))
            m["sharing"] = s
        elif key == "mode":
            m["mode"] = _uint(val, 8, "mode", vat)
        elif key in ("uid", "gid"):
            m[key] = _uint(val, 10, key, vat)
        elif key == "env":
            if m["type"] != "secret":
                raise MountError(f"unexpected key '{key}' for mount type '{m['type']}'", at, len(key))
            m["env"] = val
    if ro_auto:
        m["readonly"] = m["type"] not in ("cache", "tmpfs")
    try:
        _validate(m)
    except MountError as e:
        e.offset, e.length = where.get(e.key, (0, 0))  # type: ignore[attr-defined]
        raise
    if ssh_index is not None:
        _defaults(m, ssh_index)
    # built without the frozen __init__ (15 object.__setattr__ calls); absent fields read the
    # class-level defaults of the dataclass
    spec = object.__new__(MountSpec)
    spec.__dict__.update(m)
    spec.__dict__["deferred"] = tuple(deferred)
    spec.__dict__["explicit"] = tuple(explicit)
    return spec


def _invalid(message: str, key: str) -> MountError:
    e = MountError(message)
    e.key = key  # type: ignore[attr-defined]
    return e


def _validate(m: dict) -> None:
    typ = m["type"]
    if typ not in ("secret", "ssh", "cache"):
        for attr in ("mode", "uid", "gid"):
            if m.get(attr) is not None:
                raise _invalid(f'{attr} not allowed for "{typ}" type mounts', attr)
    if typ == "secret":
        if m.get("from_"):
            raise _invalid("secret mount should not have a from", "from")
        if m.get("sharing"):
            raise _invalid("secret mount should not define sharing", "sharing")
        if not (m.get("source") or m.get("target") or m.get("id") or m.get("env")):
            raise _invalid("invalid secret mount. one of source, target required", "type")
        if m.get("source") and m.get("id"):
            raise _invalid("both source and id can't be set", "id")
    if m.get("sharing") and typ != "cache":
        raise _invalid(f"invalid cache sharing set for {typ} mount", "sharing")


def _defaults(m: dict, ssh_index: int) -> None:
    typ = m["type"]
    if typ == "cache":
        m["id"] = m.get("id") or m.get("target", "")
        m["sharing"] = m.get("sharing") or "shared"
    elif typ == "secret":
        ident = m.get("source") or m.get("id") or posixpath.basename(m.get("target", ""))
        target = m.get("target", "")
        if not target and m.get("env") is None:
            target = "/run/secrets/" + posixpath.basename(ident)
        m.update(id=ident, source="", target=target)
        if m.get("mode") is None:
            m["mode"] = 0o400
    elif typ == "ssh":
        m["id"] = m.get("id") or "default"
        m["target"] = m.get("target") or f"/run/buildkit/ssh_agent.{ssh_index}"
        if m.get("mode") is None:
            m["mode"] = 0o600


def apply_defaults(m: MountSpec, ssh_index: int = 0) -> MountSpec:
    """Fill in what BuildKit fills in when it lowers the mount (see the module docstring)."""
    d = dict(m.__dict__)
    _defaults(d, ssh_index)
    return MountSpec(**d)
