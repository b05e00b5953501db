"""The edits the realistic benchmark cases make before each timed rebuild (hyperfine ``--prepare``).

    mutate.py edit FILE          # a source edit: FILE gets a new last comment line, stays valid code
    mutate.py deps CTX ALT F...  # a dependency edit: each F of CTX trades places with ALT/F and
                                 # the first gets a new stamp, so the list alternates between two
                                 # real sets (a package more or less) and is never one a cache has
                                 # seen (a lock file is not stamped: its manifest is)

Every run must give content no earlier build had: alternating between two fixed files would be a
cache hit from the second run on, for BuildKit and irctl alike, and measure nothing.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

COMMENT = {".py": "#", ".js": "//", ".c": "//", ".h": "//", ".txt": "#", "": "#"}  # "" = Makefile


def stamp_lines(text: str, prefix: str) -> str:
    """``text`` with its stamp line (``PREFIX edit …``) replaced by a new one at the end."""
    mark = f"{prefix} edit "
    lines = [line for line in text.splitlines() if not line.startswith(mark)]
    return "\n".join(lines) + f"\n{mark}{time.time_ns()}\n"


def stamp(path: Path) -> None:
    if path.name == "package.json":  # JSON has no comments: a field npm ci does not compare with the lock
        data = json.loads(path.read_text())
        data["description"] = f"edit {time.time_ns()}"
        path.write_text(json.dumps(data, indent=2) + "\n")
        return
    path.write_text(stamp_lines(path.read_text(), COMMENT[path.suffix]))


def swap(ctx: Path, alt: Path, names: list[str]) -> None:
    for name in names:
        here, there, tmp = ctx / name, alt / name, alt / (name + ".swap")
        shutil.copyfile(here, tmp)
        shutil.copyfile(there, here)
        tmp.replace(there)
    stamp(ctx / names[0])


def main(argv: list[str]) -> None:
    if len(argv) >= 2 and argv[0] == "edit":
        for name in argv[1:]:
            stamp(Path(name))
    elif len(argv) >= 4 and argv[0] == "deps":
        swap(Path(argv[1]), Path(argv[2]), argv[3:])
    else:
        sys.exit(__doc__.split("\n\n")[1])


if __name__ == "__main__":
    main(sys.argv[1:])
