"""Human views of a graph: one-line op summaries, source locations, topological order, Graphviz, diffs.

``irctl dump`` and error messages use these, so an op is described the same way everywhere: its
short digest (12 hex digits), its kind, a one-line summary (argv for exec, src → dest for copy,
the reference for a source, …) and where in the user's files it came from (``Dockerfile:12``).
Secrets appear only by id: their values never exist in the IR.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Iterator

from ir import ops, wire


def short(digest: str) -> str:
    """`sha256:0123456789abcdef…` → `0123456789ab`."""
    return digest.split(":", 1)[-1][:12]


def ref_text(ref: ops.Ref) -> str:
    return short(ref.op) + (f"[{ref.output}]" if ref.output else "")


# --------------------------------------------------------------------------- summaries


def summary(op: ops.Op) -> str:
    """One line saying what ``op`` does."""
    return _SUMMARY[op.kind](op, getattr(op, op.kind))


def _source(op: ops.Op, s: ops.SourceOp) -> str:
    if s.image is not None:
        pin = f"@{short(s.image.digest)}" if s.image.digest else ""
        return f"image {s.image.ref}{pin}{_platform(s.image.platform)}"
    if s.local is not None:
        return f"local {s.local.name}" + "".join(f" !{p}" for p in s.local.exclude)
    if s.http is not None:
        return f"http {s.http.url}" + (f" ({short(s.http.checksum)})" if s.http.checksum else "")
    if s.git is not None:
        return f"git {s.git.remote}" + (f"#{s.git.ref}" if s.git.ref else "") + (
            f":{s.git.subdir}" if s.git.subdir else "")
    if s.oci_layout is not None:
        o = s.oci_layout
        return f"oci-layout {o.name}" + (f":{o.ref}" if o.ref else "") + (f"@{short(o.digest)}" if o.digest else "")
    return "scratch"


def _platform(p: ops.Platform) -> str:
    if p == ops.Platform():
        return ""
    return f" ({p.os}/{p.architecture}{'/' + p.variant if p.variant else ''})"


def _exec(op: ops.Op, e: ops.ExecOp) -> str:
    extra = [f"{k}={v}" for k, v in (("cwd", e.cwd), ("user", e.user), ("network", e.network),
                                     ("security", e.security)) if v != _EXEC_DEFAULTS[k]]
    return shlex.join(e.args) + (f"  ({', '.join(extra)})" if extra else "")


_EXEC_DEFAULTS = {"cwd": "/", "user": "", "network": "default", "security": "sandbox"}


def _file(op: ops.Op, f: ops.FileOp) -> str:
    return "; ".join(action_text(op, a) for a in f.actions)


def action_text(op: ops.Op, a: ops.FileAction) -> str:
    if a.copy is not None:
        c = a.copy
        src = ref_text(op.inputs[c.src]) if 0 <= c.src < len(op.inputs) else f"input {c.src}"
        return f"copy {src}:{c.src_path} → {c.dest}"
    if a.mkfile is not None:
        return f"mkfile {a.mkfile.path} ({len(a.mkfile.data)} bytes, {a.mkfile.mode:04o})"
    if a.mkdir is not None:
        return f"mkdir {a.mkdir.path}" + (" -p" if a.mkdir.parents else "")
    if a.rm is not None:
        return f"rm {a.rm.path}"
    assert a.symlink is not None
    return f"symlink {a.symlink.path} → {a.symlink.target}"


def _merge(op: ops.Op, m: ops.MergeOp) -> str:
    return " + ".join(ref_text(r) for r in op.inputs)


def _diff(op: ops.Op, d: ops.DiffOp) -> str:
    return " → ".join(ref_text(r) for r in op.inputs)


def _image(op: ops.Op, i: ops.ImageOp) -> str:
    c = i.config
    parts = [f"{i.platform.os}/{i.platform.architecture}" + (f"/{i.platform.variant}" if i.platform.variant else "")]
    if c.entrypoint:
        parts.append("entrypoint " + json.dumps(list(c.entrypoint)))
    if c.cmd:
        parts.append("cmd " + json.dumps(list(c.cmd)))
    if c.env:
        parts.append(f"{len(c.env)} env")
    return ", ".join(parts)


_SUMMARY = {"source": _source, "exec": _exec, "file": _file, "merge": _merge, "diff": _diff, "image": _image}


def mount_lines(op: ops.Op) -> list[str]:
    """One line per mount of an exec op: target, type, what is mounted, flags, output."""
    if op.exec is None:
        return []
    out = []
    for m in op.exec.mounts:
        what = ""
        if m.input >= 0 and m.input < len(op.inputs):
            what = ref_text(op.inputs[m.input]) + (f":{m.selector}" if m.selector else "")
        if m.cache is not None:
            what = " ".join(filter(None, [f"id={m.cache.id}", m.cache.sharing, f"from {what}" if what else ""]))
        elif m.secret is not None:
            what = f"id={m.secret.id}" + (f" env={m.secret.env}" if m.secret.env else "") + (
                " required" if m.secret.required else "")
        elif m.ssh is not None:
            what = f"id={m.ssh.id}" + (" required" if m.ssh.required else "")
        elif m.tmpfs is not None and m.tmpfs.size:
            what = f"size={m.tmpfs.size}"
        elif m.type == "bind" and not what:
            what = "(empty)"
        flags = (" ro" if m.readonly else "") + (f" → output {m.output}" if m.output >= 0 else "")
        out.append(f"{m.target} {m.type} {what}{flags}".rstrip())
    return out


# --------------------------------------------------------------------------- metadata


def location(doc: ops.Document, digest: str) -> str:
    """`Dockerfile:12` (or `Dockerfile:12-14`) for the op's first source location, else ``""``."""
    meta = doc.metadata.get(digest)
    if meta is None or not meta.locations:
        return ""
    loc = meta.locations[0]
    name = doc.sources[loc.file].name if 0 <= loc.file < len(doc.sources) else f"<source {loc.file}>"
    end = f"-{loc.end_line}" if loc.end_line and loc.end_line != loc.line else ""
    return f"{name}:{loc.line}{end}"


def description(doc: ops.Document, digest: str) -> str:
    meta = doc.metadata.get(digest)
    return meta.description if meta is not None else ""


# --------------------------------------------------------------------------- order


def topo_order(doc: ops.Document, starts: list[str], seen: set[str] | None = None) -> list[str]:
    """Digests reachable from ``starts``, inputs before the ops reading them (first input first);
    ops already in ``seen`` are skipped (and ``seen`` is updated)."""
    seen = set() if seen is None else seen
    out: list[str] = []
    for start in starts:
        if start in seen or start not in doc.ops:
            continue
        seen.add(start)
        stack: list[tuple[str, Iterator[ops.Ref]]] = [(start, iter(doc.ops[start].inputs))]
        while stack:
            node, it = stack[-1]
            ref = next(it, None)
            if ref is None:
                stack.pop()
                out.append(node)
            elif ref.op not in seen and ref.op in doc.ops:
                seen.add(ref.op)
                stack.append((ref.op, iter(doc.ops[ref.op].inputs)))
    return out


def root_order(doc: ops.Document) -> list[str]:
    """Root names, `default` first, then sorted."""
    return sorted(doc.roots, key=lambda n: (n != "default", n))


# --------------------------------------------------------------------------- graphviz


def to_dot(doc: ops.Document) -> str:
    lines = ["digraph irctl {", "  rankdir=BT;", '  node [shape=box, fontname="monospace", fontsize=10];']
    seen: set[str] = set()
    order = topo_order(doc, [doc.roots[n].op for n in root_order(doc)], seen)
    order += topo_order(doc, sorted(doc.ops), seen)
    for digest in order:
        op = doc.ops[digest]
        label = f"{short(digest)} {op.kind}\n{_clip(summary(op), 60)}"
        loc = location(doc, digest)
        if loc:
            label += f"\n{loc}"
        lines.append(f'  "{short(digest)}" [label={_dot_str(label)}];')
    for digest in order:
        for ref in doc.ops[digest].inputs:
            attr = f" [label={_dot_str(str(ref.output))}]" if ref.output else ""
            lines.append(f'  "{short(ref.op)}" -> "{short(digest)}"{attr};')
    for name in root_order(doc):
        ref = doc.roots[name]
        lines.append(f'  {_dot_str("root " + name)} [shape=ellipse];')
        attr = f" [label={_dot_str(str(ref.output))}]" if ref.output else ""
        lines.append(f'  "{short(ref.op)}" -> {_dot_str("root " + name)}{attr};')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _dot_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid DOT string (\n, \", \\)


# --------------------------------------------------------------------------- diff


@dataclass(frozen=True)
class Change:
    """One line of a graph diff: ``+`` added, ``-`` removed, ``~`` changed (old and new digests)."""

    sign: str
    old: str
    new: str
    fields: tuple[str, ...] = ()


def diff(a: ops.Document, b: ops.Document) -> list[Change]:
    """Ops removed from ``a`` and added in ``b``; a removed and an added op with the same metadata
    (description and first location) are paired as one change, with the fields that differ."""
    removed = [d for d in topo_order(a, sorted(a.ops)) if d not in b.ops]
    added = [d for d in topo_order(b, sorted(b.ops)) if d not in a.ops]
    by_key: dict[tuple, list[str]] = {}
    for d in added:
        k = _match_key(b, d)
        if k is not None:
            by_key.setdefault(k, []).append(d)
    out: list[Change] = []
    paired: set[str] = set()
    for d in removed:
        k = _match_key(a, d)
        candidates = by_key.get(k, []) if k is not None else []
        if candidates:
            new = candidates.pop(0)
            paired.add(new)
            out.append(Change("~", d, new, tuple(changed_fields(a.ops[d], b.ops[new]))))
        else:
            out.append(Change("-", d, ""))
    # Ops without metadata that differ only in their inputs (downstream of a change) pair up too.
    unpaired = {}
    for d in added:
        if d not in paired:
            unpaired.setdefault(_shape_key(b.ops[d]), []).append(d)
    for i, c in enumerate(out):
        if c.sign == "-" and unpaired.get(_shape_key(a.ops[c.old])):
            new = unpaired[_shape_key(a.ops[c.old])].pop(0)
            paired.add(new)
            out[i] = Change("~", c.old, new, tuple(changed_fields(a.ops[c.old], b.ops[new])))
    out += [Change("+", "", d) for d in added if d not in paired]
    return out


def _shape_key(op: ops.Op) -> bytes:
    """The op's canonical bytes with its inputs' digests blanked out."""
    import msgpack

    return msgpack.packb(wire.encode(ops.Op(**{op.kind: getattr(op, op.kind)})), use_bin_type=True) + bytes(
        [len(op.inputs) & 0xFF]) + b"".join(r.output.to_bytes(4, "big", signed=True) for r in op.inputs)


def _match_key(doc: ops.Document, digest: str) -> tuple | None:
    desc, loc = description(doc, digest), location(doc, digest)
    return (doc.ops[digest].kind, desc, loc) if desc or loc else None


def changed_fields(a: ops.Op, b: ops.Op) -> list[str]:
    """Key paths whose wire values differ (`exec.args`, `inputs[0]`, …)."""
    out: list[str] = []
    _walk(wire.encode(a), wire.encode(b), "", out)
    return out


def _walk(x, y, path: str, out: list[str]) -> None:
    if type(x) is dict and type(y) is dict:
        for k in sorted(set(x) | set(y)):
            _walk(x.get(k), y.get(k), f"{path}.{k}" if path else k, out)
    elif type(x) is list and type(y) is list and len(x) == len(y):
        for i, (p, q) in enumerate(zip(x, y)):
            _walk(p, q, f"{path}[{i}]", out)
    elif x != y:
        out.append(path)
