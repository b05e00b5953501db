"""Where an op comes from, in words a user recognises: its description and its source lines.

Every message about one step (a failure, a refused grant, a progress line) names the step the same
way: the description the frontend stored (``RUN make``, ``COPY app.py``), else one derived from the
op, and the Dockerfile (or recipe) lines that made it, marked as BuildKit marks them.
"""

from __future__ import annotations

from ir import ops as irops


def describe(doc: irops.Document, digest: str) -> tuple[str, str]:
    """The op's (description, group)."""
    meta = doc.metadata.get(digest)
    op = doc.ops[digest]
    if meta is not None and meta.description:
        return meta.description, meta.group
    if op.exec is not None:
        return "RUN " + " ".join(op.exec.args), meta.group if meta else ""
    if op.source is not None:
        s = op.source
        name = (s.image and s.image.ref) or (s.local and f"local {s.local.name}") or (
            s.http and s.http.url) or (s.git and s.git.remote) or (s.oci_layout and f"oci-layout {s.oci_layout.name}") \
            or "scratch"
        return str(name), meta.group if meta else ""
    return op.kind, meta.group if meta else ""


def source_location(doc: irops.Document, digest: str, context: int = 2) -> str:
    """``Dockerfile:7`` and the source lines, the op's own marked with ``>>>`` (BuildKit style)."""
    meta = doc.metadata.get(digest)
    if meta is None:
        return ""
    blocks = []
    for loc in meta.locations:
        if not 0 <= loc.file < len(doc.sources):
            continue
        src = doc.sources[loc.file]
        lines = src.data.decode("utf-8", "replace").splitlines()
        end = loc.end_line or loc.line
        out = [f"{src.name}:{loc.line}" + (f"-{end}" if end != loc.line else ""), "-" * 20]
        for n in range(max(1, loc.line - context), min(len(lines), end) + 1):
            mark = ">>>" if loc.line <= n <= end else "   "
            out.append(f"{n:>4} | {mark} {lines[n - 1]}")
        out.append("-" * 20)
        blocks.append("\n".join(out))
    return "\n".join(blocks)


def where(doc: irops.Document, digest: str) -> str:
    """``Dockerfile:7: RUN make``: the first line of a message about the op."""
    desc, _ = describe(doc, digest)
    loc = source_location(doc, digest, 0).split("\n", 1)[0]
    return f"{loc}: {desc}" if loc else desc
