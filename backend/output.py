"""Step output → bounded, redacted lines, in time linear in the output.

A step's process is untrusted and may print anything: gigabytes without a newline, lines of
megabytes, the build's secrets.  ``Redactor`` replaces every secret value of the build (each
``--secret``, not only those the step mounts: a value can reach a step through a cache mount or
a file a previous step wrote) by ``****`` with one compiled alternation, longest form first.
``Lines`` splits the stream looking for newlines only in the new chunk, keeps at most
``MAX_LINE`` bytes of a line (plus the longest secret, so a value at the cut is still seen whole)
and counts the rest, so a line costs O(its length) time and O(``MAX_LINE``) memory; the tail kept
for error messages is ``TAIL_LINES`` such lines.
"""

from __future__ import annotations

import collections
import re
from typing import Callable, Iterable

MAX_LINE = 64 * 1024  # bytes of one output line kept; the rest is counted and said
TAIL_LINES = 20  # lines kept for the error message of a failed step
MASK = b"****"


PEM_ARMOR = re.compile(rb"-----(BEGIN|END) [\x20-\x7e]{0,80}-----")


def redaction_forms(secrets: Iterable[bytes]) -> list[bytes]:
    """What to replace, longest first: each value, the value without surrounding whitespace (a file
    written by ``echo value > file`` ends in a newline, which never reaches a split line), and each
    line of a multi-line value (8 bytes or more, e.g. a PEM key's lines) except PEM armor lines
    (``-----BEGIN CERTIFICATE-----``): they are in every PEM file, so as forms they would mask
    every certificate a step prints and flag every CA file ``apt-get install`` writes as a leak."""
    forms: set[bytes] = set()
    for s in secrets:
        forms.update(f for f in (s, s.strip()) if f)
        if b"\n" in s.strip():
            forms.update(part for part in (p.strip() for p in s.split(b"\n"))
                         if len(part) >= 8 and not PEM_ARMOR.fullmatch(part))
    return sorted(forms, key=len, reverse=True)


class Redactor:
    """Replaces every form of every secret value; one regex pass per line (the alternation tries
    the longest form first, so a value containing another is masked whole)."""

    def __init__(self, secrets: Iterable[bytes] = ()) -> None:
        self.forms = redaction_forms(secrets)
        self.longest = len(self.forms[0]) if self.forms else 0
        self._re = re.compile(b"|".join(map(re.escape, self.forms))) if self.forms else None

    def __bool__(self) -> bool:
        return self._re is not None

    def bytes(self, data: bytes, limit: int | None = None) -> bytes:
        """``data`` masked, cut to its first ``limit`` bytes: a value that starts before the cut is
        masked whole, nothing that starts after it is kept."""
        if limit is None or limit >= len(data):
            return self._re.sub(MASK, data) if self._re is not None else data
        if self._re is None:
            return data[:limit]
        out, pos = [], 0
        for m in self._re.finditer(data):
            if m.start() >= limit:
                break
            out += (data[pos:m.start()], MASK)
            pos = m.end()
        if pos < limit:
            out.append(data[pos:limit])
        return b"".join(out)

    def text(self, text: str) -> str:
        if self._re is None or not text:
            return text
        return self.bytes(text.encode("utf-8", "surrogateescape")).decode("utf-8", "replace")

    def found_in(self, data: bytes) -> bool:
        """Whether any form occurs in ``data``: one substring search per form, not the alternation.
        ``re`` tries every alternative at every position; ``bytes.__contains__`` skips ahead, which
        makes a 50-line value (a PEM file: one form per line) ~5× faster to look for in what a step
        wrote (``backend.ops.secretscan``: 1.37 s → 0.29 s over the 54 MB an ``apt-get install
        python3`` layer holds)."""
        return any(form in data for form in self.forms)


class Lines:
    """Splits the output stream into lines, redacts them, hands each to ``emit``, keeps the tail."""

    def __init__(self, emit: Callable[[str], None], redactor: Redactor | None = None) -> None:
        self.emit = emit
        self.redactor = redactor or Redactor()
        self.parts: list[bytes] = []
        self.kept = 0  # bytes in parts
        self.cut = 0  # bytes of the current line past what is kept
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

    def __call__(self, chunk: bytes) -> None:
        start = 0
        while (nl := chunk.find(b"\n", start)) >= 0:
            self._keep(chunk[start:nl])
            self._end_line()
            start = nl + 1
        if start < len(chunk):
            self._keep(chunk[start:] if start else chunk)

    def _keep(self, piece: bytes) -> None:
        room = MAX_LINE + self.redactor.longest - self.kept
        if room >= len(piece):
            self.parts.append(piece)
            self.kept += len(piece)
            return
        if room > 0:
            self.parts.append(piece[:room])
            self.kept += room
        self.cut += len(piece) - max(room, 0)

    def _end_line(self) -> None:
        line = b"".join(self.parts)
        total = len(line) + self.cut
        line = self.redactor.bytes(line, MAX_LINE if total > MAX_LINE else None)
        text = line.decode("utf-8", "replace")
        if total > MAX_LINE:
            text += f" [… {total - MAX_LINE} more bytes of this line not shown]"
        self.parts, self.kept, self.cut = [], 0, 0
        self.tail.append(text)
        self.emit(text)

    def flush(self) -> None:
        if self.parts or self.cut:
            self._end_line()
