"""After a step: did it write a secret value of the build into a layer or a cache mount?

Redaction keeps values out of the output, but a step can copy a mounted secret into a file that
becomes part of the image, or into a cache mount that a later step — or a later build, without the
secret — reads.  When the build has secrets, the exec handler hands what the step wrote to
``find``: its upper dir (everything in it is new), each output mount's upper, and each writable
cache mount, where only regular files whose ctime is not older than the step's start are read (a
process cannot set a ctime back).  Reading is in 1 MiB blocks with an overlap of the longest value,
so the cost is proportional to what the step wrote (plus one ``lstat`` per entry of a cache mount).

Only the exact forms of ``backend.output.Redactor`` of ``MIN_LENGTH`` bytes or more are found: a
value the step transformed (encoded, compressed, encrypted, split) is not, nor one in a file *name*.
The walk (``safefs.walk``) never follows a symlink, opens names relative to their parent's fd, only
regular files, and does not recurse.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterator

from backend.fs import safefs
from backend.output import Redactor

BLOCK = 1 << 20
MIN_LENGTH = 6  # shorter forms would match everywhere: not looked for in files (still redacted in output)


def _files(root: Path, since: float | None) -> Iterator[tuple[str, int]]:
    """(path relative to root, fd) of regular files under root: ``safefs.walk`` opens every name
    relative to its parent's fd, so a directory another step swaps for a link (a shared cache mount)
    is never followed."""
    try:
        for entry in safefs.walk(root, sort=False):
            st = entry.st
            if stat.S_ISREG(st.st_mode) and st.st_size and (since is None or st.st_ctime >= since):
                try:
                    fd = entry.open(os.O_RDONLY | os.O_NONBLOCK)
                except OSError:
                    continue
                yield os.fsdecode(entry.rel), fd
    except (OSError, safefs.TreeError):  # gone, or too deep: what the commit itself reports
        return


def _holds(fd: int, redactor: Redactor) -> bool:
    keep = max(redactor.longest - 1, 0)
    prev = b""
    while block := os.read(fd, BLOCK):
        data = prev + block
        if redactor.found_in(data):
            return True
        prev = data[-keep:] if keep else b""
    return False


def find(redactor: Redactor, root: Path, since: float | None = None) -> list[str]:
    """Paths (relative to ``root``, sorted) of files that hold a secret value; ``since``: only
    files changed at or after that time (``time.time()``)."""
    found: list[str] = []
    redactor = Redactor(f for f in redactor.forms if len(f) >= MIN_LENGTH)
    if not redactor:
        return found
    for name, fd in _files(root, since):
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode) and _holds(fd, redactor):
                found.append(name)
        except OSError:
            pass
        finally:
            os.close(fd)
    return sorted(found)
