"""A cache mount's directory (``RUN --mount=type=cache``) travels in a shared cache as a layer tar
(``--cache-to …,mounts=``), but it is a plain directory, not a layer: nothing in it is overlay markup.
A layer tar and its extraction read some entries as markup, though: a ``.wh.NAME`` file becomes a
whiteout (char device 0:0) of NAME, a ``.wh..wh..opq`` file an opaque mark on its directory, a char
device 0:0 is written as a whiteout, a device node as a placeholder (``backend.fs.devnodes``), an
opaque directory gets the ``.wh..wh..opq`` entry.  Such a dir would not come back as it was.

No package manager writes these, but a step can, so a dir holding one is refused both ways: not
exported (a warning), and a restored copy holding one (a cache written by something else) is not
used.  Extraction itself never leaves the destination (``backend.oci.extract``).

A dir a step wrote a secret value of its build into (``backend.ops.secretscan``) is marked, beside
it in the store where no step reaches, and never exported again: the build that exports it may not
be the one that had the secret, so it could not look for the value itself.  The mark goes with the
dir (``irctl cache prune --all``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from backend.fs import devnodes, safefs
from backend.fs.layerformat import is_opaque
from backend.oci.layertar import WH_PREFIX


def overlay_lookalike(root: Path) -> str:
    """Why ``root`` cannot go through a layer tar unchanged: its first entry that a layer tar reads
    as overlay markup or a device, named; "" when there is none."""
    for e in safefs.walk(root, sort=True, where="in a cache mount"):
        m = e.st.st_mode
        name = os.fsdecode(e.rel)
        if e.name.startswith(WH_PREFIX):
            return f"{name!r} is named like an overlay whiteout"
        if stat.S_ISCHR(m) and e.st.st_rdev == 0:
            return f"{name!r} is an overlay whiteout (a char device 0:0)"
        if stat.S_ISCHR(m) or stat.S_ISBLK(m) or devnodes.placeholder_of(e.xpath, e.st) is not None:
            return f"{name!r} is a device node"
        if stat.S_ISDIR(m) and is_opaque(e.xpath):
            return f"{name!r} carries the overlay opaque mark"
    return ""


def secret_mark(mount_dir: Path) -> Path:
    return mount_dir.with_name(mount_dir.name + ".secret")


def mark_secret(mount_dir: Path) -> None:
    """Note that a step wrote a secret value into the cache mount dir ``mount_dir``."""
    fd = os.open(secret_mark(mount_dir), os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    os.close(fd)


def holds_secret(mount_dir: Path) -> bool:
    return os.path.lexists(secret_mark(mount_dir))
