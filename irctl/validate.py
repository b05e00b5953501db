"""``irctl validate FILE``: is this a valid IR v1 graph?  Exit 0 with a one-line summary, or 2 with
every located error (``FILE: ops[sha256:ab12…].exec.cwd: cwd must be an absolute path``)."""

from __future__ import annotations

import typer

from irctl.dump import read_document, run_checked
from irctl.terminal import printable


def validate(file: str = typer.Argument(..., help="IR file ('-' reads standard input).")) -> None:
    """Check an IR file: framing, canonical encoding, digests, schema and graph rules."""
    name = "<stdin>" if file == "-" else file

    def run() -> int:
        doc = read_document(file)
        roots = ", ".join(sorted(doc.roots))
        typer.echo(printable(f"{name}: valid IR v{doc.version}: {len(doc.ops)} ops, {len(doc.roots)} roots ({roots}), "
                   f"{len(doc.features)} features ({', '.join(doc.features) or '-'})"))
        return 0

    code = run_checked(run)
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
