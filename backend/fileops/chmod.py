"""``COPY --chmod``: octal (``0755``, ``4755``) or symbolic (``u+x,g-w``, ``a=rX``, ``go=u``) modes.

BuildKit applies the mode to every copied file *and* directory (``copyFileInfo`` runs for both),
never to symlinks.  Octal sets the permission bits plus setuid/setgid/sticky.  Symbolic clauses
follow chmod(1) with a umask of 0: ``[ugoa]*([-+=]([rwxXst]*|[ugo]))+``, comma separated; an
empty "who" means ``a``; ``X`` is execute only for directories or when some execute bit is
already set; ``=`` clears the who's bits first (and for files the setid bit of ``u``/``g``).
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass

from backend.errors import BackendError

_WHO_BITS = {"u": 0o4700, "g": 0o2070, "o": 0o0007}
_PERM_SHIFT = {"u": 6, "g": 3, "o": 0}
_CLAUSE = re.compile(r"([ugoa]*)((?:[-+=](?:[rwxXst]*|[ugo]))+)\Z")
_ACTION = re.compile(r"([-+=])([ugo]|[rwxXst]*)")


class ChmodError(BackendError):
    """A --chmod value that is neither octal nor a valid symbolic mode."""


@dataclass(frozen=True)
class ModeSpec:
    """A parsed --chmod.  ``apply(old_mode, is_dir)`` → the new permission bits (07777)."""

    text: str
    octal: int | None
    clauses: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()

    def apply(self, old_mode: int, is_dir: bool) -> int:
        if self.octal is not None:
            return self.octal
        mode = stat.S_IMODE(old_mode)
        for who, actions in self.clauses:
            whos = who.replace("a", "ugo") or "ugo"
            for op, perm in actions:
                mode = _apply_action(mode, old_mode, whos, op, perm, is_dir)
        return mode


def _bits_for(whos: str, perm: str, mode: int, old_mode: int, is_dir: bool) -> int:
    """The mode bits that `perm` (letters, or a copy source u/g/o) stands for, for these whos."""
    if perm in ("u", "g", "o"):
        src = (mode >> _PERM_SHIFT[perm]) & 0o7
        return sum(src << _PERM_SHIFT[w] for w in set(whos))
    bits = 0
    for w in set(whos):
        shift = _PERM_SHIFT[w]
        for ch in perm:
            if ch == "r":
                bits |= 0o4 << shift
            elif ch == "w":
                bits |= 0o2 << shift
            elif ch == "x":
                bits |= 0o1 << shift
            elif ch == "X":
                if is_dir or old_mode & 0o111:
                    bits |= 0o1 << shift
            elif ch == "s":
                bits |= {"u": stat.S_ISUID, "g": stat.S_ISGID}.get(w, 0)
            elif ch == "t":
                bits |= stat.S_ISVTX if w == "o" else 0
    return bits


def _apply_action(mode: int, old_mode: int, whos: str, op: str, perm: str, is_dir: bool) -> int:
    bits = _bits_for(whos, perm, mode, old_mode, is_dir)
    if op == "+":
        return mode | bits
    if op == "-":
        return mode & ~bits
    clear = 0
    for w in set(whos):
        clear |= _WHO_BITS[w] & (0o777 if is_dir else 0o7777)  # chmod(1) keeps a dir's setid bits
    if "o" in whos:
        clear |= stat.S_ISVTX
    return (mode & ~clear) | bits


def parse_chmod(text: str) -> ModeSpec | None:
    """Parse a --chmod value; ``""`` → None (keep the source's mode)."""
    text = text.strip()
    if not text:
        return None
    if text.isdigit():
        if any(c not in "01234567" for c in text):
            raise ChmodError(f"invalid chmod {text!r}: not an octal mode")
        value = int(text, 8)
        if value > 0o7777:
            raise ChmodError(f"invalid chmod {text!r}: out of range (max 7777)")
        return ModeSpec(text, value)
    clauses = []
    for clause in text.split(","):
        m = _CLAUSE.match(clause)
        if not m:
            raise ChmodError(f"invalid chmod {text!r}: bad clause {clause!r}")
        actions = tuple((a.group(1), a.group(2)) for a in _ACTION.finditer(m.group(2)))
        clauses.append((m.group(1), actions))
    return ModeSpec(text, None, tuple(clauses))
