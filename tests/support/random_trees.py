"""Small random directory trees (files, dirs and links, some pointing out) and ignore-pattern lists
for the property tests of the context scan and of COPY's selection."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import strategies as st

NAMES = st.sampled_from(["a", "b", "c.txt", "d.md", "e.py", "sub", "x"])


@st.composite
def trees(draw):
    """A small random tree: (relpath, kind, payload) with kind file/dir/link."""
    items = {}
    for _ in range(draw(st.integers(1, 14))):
        depth = draw(st.integers(1, 3))
        parts = [draw(NAMES) for _ in range(depth)]
        for i in range(1, depth):
            prefix = "/".join(parts[:i])
            if items.get(prefix, ("dir",))[0] != "dir":
                break
            items[prefix] = ("dir", 0o755)
        else:
            path = "/".join(parts)
            if path in items:
                continue
            kind = draw(st.sampled_from(["file", "file", "dir", "link"]))
            if kind == "file":
                items[path] = ("file", draw(st.sampled_from([b"", b"1", b"22", b"abc"])), draw(st.sampled_from([0o644, 0o755, 0o600])))
            elif kind == "dir":
                items[path] = ("dir", draw(st.sampled_from([0o755, 0o700])))
            else:
                items[path] = ("link", draw(st.sampled_from(["a", "../a", "/sub", "sub/c.txt", "/etc/passwd", "x/../a"])))
    return items


def build(root: Path, items: dict) -> None:
    root.mkdir()
    for path in sorted(items, key=lambda p: p.count("/")):
        kind, *rest = items[path]
        p = root / path
        if any(items.get("/".join(path.split("/")[:i]), ("dir",))[0] != "dir" for i in range(1, path.count("/") + 1)):
            continue
        if kind == "dir":
            p.mkdir(exist_ok=True)
            os.chmod(p, rest[0])
        elif kind == "file":
            p.write_bytes(rest[0])
            os.chmod(p, rest[1])
        else:
            os.symlink(rest[0], p)


PATTERNS = st.lists(st.sampled_from(["*.md", "sub", "!sub/c.txt", "**/*.py", "x/*", "a", "!a", "*/b"]), max_size=3)
