"""The readable JSON projection of a compiled document that the golden IR files store
(``tests/dockerfile/golden_ir``, ``tests/toml/golden``, ``tests/pydsl/golden``): one shape for the
three frontends, so that a golden file can be read (and diffed) without decoding digests."""

from __future__ import annotations

import base64

from ir import ops, wire


def project(doc: ops.Document) -> dict:
    """The document as readable JSON: ops in a stable topological order (inputs first, depth-first
    from the roots), each as ``{"id", "kind", "inputs", <fields>, "meta"}`` with digests replaced by
    op ids; byte strings as text; defaults omitted (the wire form)."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(digest: str) -> None:
        if digest in seen:
            return
        seen.add(digest)
        for ref in doc.ops[digest].inputs:
            visit(ref.op)
        order.append(digest)

    for ref in doc.roots.values():
        visit(ref.op)
    ids = {d: f"#{i}" for i, d in enumerate(order)}
    out_ops = []
    for digest in order:
        op = doc.ops[digest]
        body = wire.encode(getattr(op, op.kind))
        entry = {"id": ids[digest], "kind": op.kind}
        if op.inputs:
            entry["inputs"] = [ids[r.op] + (f".{r.output}" if r.output else "") for r in op.inputs]
        entry.update(_readable(body))
        meta = doc.metadata.get(digest)
        if meta is not None:
            m = {}
            if meta.description:
                m["description"] = meta.description
            if meta.group:
                m["group"] = meta.group
            if meta.locations:
                m["lines"] = [f"{loc.line}:{loc.column}" + (f"-{loc.end_line}" if loc.end_line else "")
                              for loc in meta.locations]
            entry["meta"] = m
        out_ops.append(entry)
    return {
        "roots": {k: ids[r.op] for k, r in doc.roots.items()},
        "features": list(doc.features),
        "sources": [{"name": s.name, "language": s.language} for s in doc.sources],
        "ops": out_ops,
    }


def _readable(value):
    if isinstance(value, dict):
        return {k: _readable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_readable(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(value).decode()
    return value
