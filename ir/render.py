"""Human views of a graph: one-line op summaries, source locations, topological order, Graphviz, diffs.

``irctl dump`` and error messages use these, so an op is described the same way everywhere: its
short digest (12 hex digits), its kind, a one-line summary (argv for exec, src → dest for copy,
the reference for a source, …) and where in the user's files it came from (``Dockerfile:12``).
Secrets appear only by id: their values never exist in the IR.
"""

from __future__ import annotations

import contextvars
import heapq
import json
import re
import shlex
import textwrap
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import msgspec

from ir import ops, wire

_FULL_DIGESTS = contextvars.ContextVar("full_digests", default=False)


def short(digest: str) -> str:
    """`sha256:0123456789abcdef…` → `0123456789ab` (the whole digest inside ``full_digests()``)."""
    return digest if _FULL_DIGESTS.get() else digest.split(":", 1)[-1][:12]


@contextmanager
def full_digests(on: bool = True) -> Iterator[None]:
    """Every view rendered inside prints whole digests (``irctl dump --no-trunc``): one switch rather
    than a flag threaded through every summary helper, so no view can forget it."""
    token = _FULL_DIGESTS.set(on)
    try:
        yield
    finally:
        _FULL_DIGESTS.reset(token)


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
    extra = [f"{f.name}={_setting(getattr(e, f.name))}" for f in ops.field_specs(type(e))
             if f.name not in ("args", "mounts", "env") and getattr(e, f.name) != f.default]
    argv = " ".join([*map(shlex.quote, e.args[:-1]), SCRIPT]) if script_lines(op) else shlex.join(e.args)
    return argv + (f"  ({', '.join(extra)})" if extra else "")


def _setting(value: object) -> str:
    """An exec setting away from its default, in a few characters. Every field but the argv, mounts
    and environment (shown on their own lines) is listed this way, so a field added to `ExecOp`
    (platform, hosts, limits) shows in the dump without anyone remembering to add it here."""
    if isinstance(value, ops.Platform):
        return _platform(value).strip(" ()") or "linux/amd64"
    if isinstance(value, (tuple, list)):
        return ",".join(_setting(v) for v in value)
    if isinstance(value, msgspec.Struct):
        return ":".join(_setting(getattr(value, f.name)) for f in ops.field_specs(type(value)))
    return str(value)

SCRIPT = "<script>"  # stands in a summary for a shell script shown below the op, one line per line


def script_lines(op: ops.Op) -> list[str]:
    """The lines of an exec's shell script (``sh -c SCRIPT``) when it spans several: a heredoc's own
    lines (dedented, tabs as four spaces), or a one-line ``&& \\`` chain cut where its continuation lines were joined
    (a run of blanks outside quotes); the continuations indented by two, all alike: a blank
    continuation line joins its blanks to the next line's, so the source's nesting cannot be told
    from the run's width. ``[]`` for a one-liner, which stays in the summary."""
    e = op.exec
    if e is None or len(e.args) < 3 or not _SHELL_C.fullmatch(e.args[-2]):
        return []
    script = e.args[-1]
    if "\n" in script:
        lines = textwrap.dedent(script.replace("\t", "    ")).strip("\n").split("\n")
        return [line.rstrip() for line in lines]
    pieces = _joined_lines(script)
    return [pieces[0]] + ["  " + p for p in pieces[1:]] if len(pieces) > 1 else []


_SHELL_C = re.compile(r"-[A-Za-z]*c")  # `-c`, `-ec`, `-euxc`: the next argument is the script


def _joined_lines(script: str) -> list[str]:
    """Cut a one-line script where a Dockerfile's `\\` newline was removed: a run of three blanks or
    more (or one holding a tab), or of two after `&&`, `||`, `|` or `;`, outside quotes."""
    pieces, start, i, quote = [], 0, 0, ""
    while i < len(script):
        c = script[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 1
            elif c == quote:
                quote = ""
        elif c == "\\":
            i += 1
        elif c in "'\"":
            quote = c
        elif c in " \t":
            j = i
            while j < len(script) and script[j] in " \t":
                j += 1
            run, before = script[i:j], script[start:i].rstrip()
            if j < len(script) and (len(run) >= 3 or "\t" in run or (
                    len(run) == 2 and before.endswith(("&&", "||", "|", ";")))):
                pieces.append(script[start:i])
                start = j
            i = j
            continue
        i += 1
    pieces.append(script[start:])
    return [p.strip() for p in pieces if p.strip()]


def env_changes(doc: ops.Document, digest: str, memo: dict[str, str | None]) -> list[tuple[str, str | None]]:
    """An exec's environment as ``(name, value)``, only what differs from the nearest exec below it in
    its filesystem chain (``base_exec``; ``memo`` is its memo), ``(name, None)`` for a variable it no
    longer has; all of it when nothing below runs a process. Showing only the difference keeps a
    stage's PATH from repeating under every step. ARGs in scope are part of it: the IR passes them
    to the process as variables, so they cannot be told apart from ENV here."""
    e = doc.ops[digest].exec
    if e is None:
        return []
    below = base_exec(doc, digest, memo)
    mine = _env_dict(e.env)
    old = _env_dict(doc.ops[below].exec.env) if below else {}
    changed: list[tuple[str, str | None]] = [(k, v) for k, v in mine.items() if old.get(k) != v]
    return changed + [(k, None) for k in old if k not in mine]


def _env_dict(env: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in env:
        k, _, v = item.partition("=")
        out[k] = v
    return out


def base_exec(doc: ops.Document, digest: str, memo: dict[str, str | None]) -> str | None:
    """The nearest exec op under ``digest``'s root filesystem (following the rootfs mount, a file op's
    base, the first input of a merge, diff or image), or ``None``; ``memo`` keeps each answer so a
    whole listing stays linear on a long chain."""
    path: list[str] = []
    node = _fs_parent(doc, digest)
    found: str | None = None
    while node is not None:
        if node in memo:
            found = memo[node]
            break
        if doc.ops[node].exec is not None:
            found = node
            break
        path.append(node)
        node = _fs_parent(doc, node)
    for d in path:
        memo[d] = found
    return found


def _fs_parent(doc: ops.Document, digest: str) -> str | None:
    op = doc.ops[digest]
    if op.exec is not None:
        i = op.exec.mounts[0].input if op.exec.mounts else -1
    elif op.file is not None:
        i = op.file.base
    else:
        i = 0
    ref = op.inputs[i] if 0 <= i < len(op.inputs) else None
    return ref.op if ref is not None and ref.op in doc.ops and ref.op != digest else None


def _file(op: ops.Op, f: ops.FileOp) -> str:
    text = "; ".join(action_text(op, a) for a in f.actions)
    return text + ("  (base: empty)" if f.base < 0 else "")


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
    return _location_text(doc, meta.locations[0])


def _location_text(doc: ops.Document, loc: ops.Location, name_known: str = "") -> str:
    name = doc.sources[loc.file].name if 0 <= loc.file < len(doc.sources) else f"<source {loc.file}>"
    end = f"-{loc.end_line}" if loc.end_line and loc.end_line != loc.line else ""
    return (f"{name}:" if name != name_known else "") + f"{loc.line}{end}"


def locations(doc: ops.Document, digest: str, most: int = 3) -> str:
    """Every place an op came from, earliest first: `Dockerfile:18; also 26, 40 and 2 more`. An op
    shared by several stages (one base image) carries each stage's line; the earliest is where a
    reader meets it first, whichever stage the frontend happened to record first."""
    meta = doc.metadata.get(digest)
    if meta is None or not meta.locations:
        return ""
    locs = sorted(meta.locations, key=lambda loc: (loc.file, loc.line, loc.column))
    first = _location_text(doc, locs[0])
    name = first.rsplit(":", 1)[0]
    rest = [_location_text(doc, loc, name) for loc in locs[1:most + 1]]
    more = len(locs) - 1 - len(rest)
    if not rest:
        return first
    return f"{first}; also {', '.join(rest)}" + (f" and {more} more" if more else "")


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


def stage_order(doc: ops.Document, order: list[str]) -> list[tuple[str, str]]:
    """``order`` (a topological order) rearranged so each stage's ops are listed together, stages
    earliest in the source first, as ``(group, digest)`` pairs.

    An op's stage is its metadata group. An op without one continues the stage it builds on (the
    image config); a source without one (the build context), or an op shared by several places (a
    base image several stages start from, a `COPY --from` of it) joins the earliest stage reading
    it. Still topological: a stage only breaks in two when it must wait for a later one."""
    pos = {d: i for i, d in enumerate(order)}
    inputs = {d: list(dict.fromkeys(r.op for r in doc.ops[d].inputs if r.op in pos and r.op != d)) for d in order}
    readers: dict[str, list[str]] = {d: [] for d in order}
    for d in order:
        for i in inputs[d]:
            readers[i].append(d)
    group: dict[str, str] = {}
    for d in order:  # inputs first: an op without a group continues the stage it builds on
        meta, parent = doc.metadata.get(d), _fs_parent(doc, d)
        if meta is not None and meta.group and len(meta.locations) <= 1:
            group[d] = meta.group
        elif (meta is None or not meta.group) and group.get(parent):
            group[d] = group[parent]
    first = _stage_ranks(inputs, group, _group_keys(doc, order, group))
    for d in reversed(order):  # readers first: a source, or an op shared by several stages
        if d not in group:
            mine = [group[r] for r in readers[d] if r in group]
            if mine:
                group[d] = min(mine, key=first.__getitem__)
    for d in order:  # left: ops no stage reads that build on nothing grouped
        if d not in group:
            meta, parent = doc.metadata.get(d), _fs_parent(doc, d)
            group[d] = group.get(parent, "") or (meta.group if meta is not None else "")
    rank = _stage_ranks(inputs, group, _group_keys(doc, order, group))
    waiting = {d: len(inputs[d]) for d in order}
    ready = [(rank[group[d]], pos[d], d) for d in order if waiting[d] == 0]
    heapq.heapify(ready)
    out: list[tuple[str, str]] = []
    while ready:
        _, _, d = heapq.heappop(ready)
        out.append((group[d], d))
        for r in readers[d]:
            waiting[r] -= 1
            if waiting[r] == 0:
                heapq.heappush(ready, (rank[group[r]], pos[r], r))
    return out


def _group_keys(doc: ops.Document, order: list[str], group: dict[str, str]) -> dict[str, tuple]:
    """Per stage: its earliest source location (file, line), else where its first op is listed."""
    keys: dict[str, tuple] = {}
    for i, d in enumerate(order):
        g = group.get(d)
        if g is None:
            continue
        meta = doc.metadata.get(d)
        key = min(((0, loc.file, loc.line, i) for loc in meta.locations), default=(1, i)) if meta else (1, i)
        if g not in keys or key < keys[g]:
            keys[g] = key
    return keys


def _stage_ranks(inputs: dict[str, list[str]], group: dict[str, str], keys: dict[str, tuple]) -> dict[str, int]:
    """Stages in an order that puts a stage after those it reads (earliest in the source first among
    the ready ones); a cycle (ops shared both ways) is broken at its earliest stage."""
    after: dict[str, set[str]] = {g: set() for g in keys}
    for d, ins in inputs.items():
        if d in group:
            after[group[d]].update(group[i] for i in ins if i in group and group[i] != group[d])
    readers: dict[str, list[str]] = {g: [] for g in keys}
    for g, hs in after.items():
        for h in hs:
            readers[h].append(g)
    waiting = {g: len(hs) for g, hs in after.items()}
    ready = [(keys[g], g) for g in keys if not waiting[g]]
    heapq.heapify(ready)
    by_key, next_left = sorted(keys, key=lambda g: keys[g]), 0
    rank: dict[str, int] = {}
    while len(rank) < len(keys):
        if not ready:  # a cycle: take the earliest stage still waiting
            while by_key[next_left] in rank:
                next_left += 1
            g = by_key[next_left]
        else:
            g = heapq.heappop(ready)[1]
            if g in rank:
                continue
        rank[g] = len(rank)
        for r in readers[g]:
            waiting[r] -= 1
            if waiting[r] == 0 and r not in rank:
                heapq.heappush(ready, (keys[r], r))
    return rank


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
