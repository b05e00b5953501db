"""``irctl dump``: look at an IR file — a readable listing, its JSON form, Graphviz, or a diff.

    irctl dump graph.irg                 ops grouped by target, inputs first, with mounts and locations
    irctl dump --format json graph.irg   the document's JSON form (``spec/ir.schema.json``; bytes base64)
    irctl dump --format dot graph.irg    Graphviz
    irctl dump --diff old.irg new.irg    ops removed (-), added (+), changed (~); exit 1 when they differ
    irctl dump --no-trunc graph.irg      whole digests (``sha256:…``) instead of 12 hex digits

The file is fully validated first; a bad file exits 2 with its located errors, never a traceback.
"""

from __future__ import annotations

import sys
from typing import Optional

import typer

from ir.errors import IRError, ValidationErrors
from irctl.errors import UserError, report, user_errors
from irctl.terminal import json_text, printable

FORMATS = ("text", "json", "dot")


def read_document(path: str):
    """Read and validate an IR file (``-``: standard input); errors name the file, one per line."""
    from ir.limits import read_file  # lazy: --help imports every command module
    from ir.validate import load_and_validate  # lazy: as read_file (the validator ~60 ms)

    name = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            data = read_file(sys.stdin.buffer)
        else:
            with open(path, "rb") as f:
                data = read_file(f)
        return load_and_validate(data)
    except ValidationErrors as e:
        raise UserError("\n".join(f"{name}: {err}" for err in e.errors), 2) from None
    except IRError as e:
        raise UserError(f"{name}: {e}", 2) from None


def run_checked(fn, *args) -> int:
    """Run ``fn`` inside the one user-error path; report and return the exit code (2 for a bad file)."""
    try:
        with user_errors(exit_code=2):
            return fn(*args)
    except UserError as e:
        report(e)
        return e.exit_code


def text_listing(doc) -> str:
    """Per root: the ops it needs that no earlier root listed, stage by stage (each stage's heading
    once, stages in source order, a shared base image under the first stage that reads it)."""
    from ir import render  # lazy: --help imports every command module (~35 ms)

    lines = [f"{len(doc.ops)} ops, {len(doc.roots)} roots, features: {', '.join(doc.features) or '-'}"]
    seen: set[str] = set()
    below: dict[str, str | None] = {}
    groups = [(f"target {name} = {render.ref_text(doc.roots[name])}", [doc.roots[name].op])
              for name in render.root_order(doc)]
    groups.append(("unreachable", sorted(doc.ops)))
    for title, starts in groups:
        order = render.topo_order(doc, starts, seen)
        if not order:
            if title.startswith("target"):
                lines += ["", title + "  (listed above)"]
            continue
        lines.append("")
        lines.append(title)
        heading = None
        for group, digest in render.stage_order(doc, order):
            if group and group != heading:
                lines.append(f"  [{group}]")
            heading = group or heading
            lines += op_lines(doc, digest, below)
    return one_per_line(lines)


def one_per_line(lines: list[str]) -> str:
    """Each line with its control characters escaped, line breaks included: a newline in an
    argument, a variable or a name from a hostile IR file cannot forge a line of the listing (a
    script's own lines are split beforehand)."""
    return "".join(printable(line) + "\n" for line in lines)


def op_lines(doc, digest: str, below: dict) -> list[str]:
    """An op's line, then its script, inputs, mounts and the environment it changes (``below``: the
    memo of ``render.base_exec``)."""
    from ir import render  # lazy: as in text_listing

    op = doc.ops[digest]
    loc = render.locations(doc, digest)
    head = f"  {render.short(digest)}  {op.kind:<6} {render.summary(op)}"
    lines = [head + (f"  ({loc})" if loc else "")]
    lines += script_block(op)
    if op.inputs and op.kind not in ("merge", "diff"):
        lines.append(f"      inputs: {', '.join(render.ref_text(r) for r in op.inputs)}")
    lines += [f"      mount {m}" for m in render.mount_lines(op)]
    lines += [f"      env {k}={v}" if v is not None else f"      unset {k}" for k, v in render.env_changes(doc, digest, below)]
    return lines


def script_block(op) -> list[str]:
    from ir import render  # lazy: as in text_listing

    script = render.script_lines(op)
    return ["      script:"] + [f"        {line}" for line in script] if script else []


def script_changes(old, new) -> list[str]:
    """The lines of a changed script that differ, `-` old and `+` new: the whole new script would
    read as if all of it had changed."""
    import difflib

    from ir import render  # lazy: as in text_listing

    a, b = render.script_lines(old), render.script_lines(new)
    if not a and not b:
        return []
    out = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag != "equal":
            out += [f"      - {line}" for line in a[i1:i2]] + [f"      + {line}" for line in b[j1:j2]]
    return ["      script:"] + out if out else []


def diff_listing(a, b) -> tuple[str, int]:
    from ir import render  # lazy: as in text_listing

    changes = render.diff(a, b)
    lines = []
    for c in changes:
        doc, digest = (a, c.old) if c.sign == "-" else (b, c.new)
        op = doc.ops[digest]
        loc = render.location(doc, digest)
        at = f"  ({loc})" if loc else ""
        if c.sign == "~":
            what = ", ".join(c.fields)
            lines.append(f"~ {render.short(c.old)} → {render.short(c.new)}  {op.kind:<6} {render.summary(op)}{at}")
            lines += script_changes(a.ops[c.old], op)
            lines.append(f"      changed: {what}")
        else:
            lines.append(f"{c.sign} {render.short(digest)}  {op.kind:<6} {render.summary(op)}{at}")
            lines += script_block(op)
    if set(a.roots.items()) != set(b.roots.items()):
        for name in sorted(set(a.roots) | set(b.roots)):
            old, new = a.roots.get(name), b.roots.get(name)
            if old != new:
                fmt = lambda r: render.ref_text(r) if r is not None else "(none)"  # noqa: E731
                lines.append(f"root {name}: {fmt(old)} → {fmt(new)}")
    if not lines:
        return "no differences\n", 0
    counts = {s: sum(c.sign == s for c in changes) for s in "-+~"}
    lines.append(f"{counts['-']} removed, {counts['+']} added, {counts['~']} changed")
    return one_per_line(lines), 1


def dump(
    file: str = typer.Argument(..., help="IR file ('-' reads standard input)."),
    other: Optional[str] = typer.Argument(None, help="With --diff: the newer IR file."),
    fmt: str = typer.Option("text", "--format", help="text, json (the schema's JSON form) or dot (Graphviz)."),
    diff: bool = typer.Option(False, "--diff", help="Compare FILE with OTHER: ops removed, added, changed."),
    no_trunc: bool = typer.Option(False, "--no-trunc", help="Print whole digests (default: their first 12 hex digits)."),
) -> None:
    """Show an IR graph: ops by target, inputs first, with mounts and source locations."""

    def run() -> int:
        if fmt not in FORMATS:
            raise UserError(f"unknown --format {fmt!r} (choose {', '.join(FORMATS)})", 2)
        if diff:
            if other is None:
                raise UserError("--diff needs two files: irctl dump --diff OLD NEW", 2)
            text, code = diff_listing(read_document(file), read_document(other))
            typer.echo(printable(text, newlines=True), nl=False)
            return code
        if other is not None:
            raise UserError(f"unexpected second file {other!r} (did you mean --diff?)", 2)
        doc = read_document(file)
        if fmt == "json":
            from ir import jsonform  # lazy: only for --format json (~45 ms)

            out, batch = sys.stdout, []
            for piece in jsonform.iter_dumps(doc):
                batch.append(piece)
                if len(batch) >= 4096:
                    out.write(json_text("".join(batch)))
                    batch.clear()
            out.write(json_text("".join(batch)) + "\n")
        elif fmt == "dot":
            from ir.render import to_dot  # lazy: only for --format dot

            typer.echo(printable(to_dot(doc), newlines=True), nl=False)
        else:
            typer.echo(printable(text_listing(doc), newlines=True), nl=False)
        return 0

    from ir.render import full_digests  # lazy: as in text_listing

    with full_digests(no_trunc):
        code = run_checked(run)
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("dump")(dump)
