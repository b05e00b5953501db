"""``irctl dockerfile …``: look at a Dockerfile the way the parser sees it.

``irctl dockerfile parse FILE`` prints ``{"instructions": [...]}`` in the reference parser's JSON
conventions (``shared/corpus/README.md``), then the build-check warnings on stderr.  A parse error
exits 2 with the located message (``Dockerfile:3:6: …``, the line, a caret), never a traceback
(an internal error exits 3 with a one-line message).
The main app mounts this sub-app as ``dockerfile``.
"""

from __future__ import annotations

import json
import sys

import typer

from frontends.dockerfile.parse import parse_dockerfile, parse_file
from frontends.dockerfile.syntax import parse_syntax
from frontends.errors import SourceError
from frontends.files import FileError, read_context_file
from irctl.terminal import json_text, printable

app = typer.Typer(help="Inspect Dockerfiles.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Dockerfile tools."""


@app.command()
def parse(
    file: str = typer.Argument(..., help="the Dockerfile ('-' reads standard input)"),
    syntax_only: bool = typer.Option(
        False, "--syntax-only", help="stop after BuildKit's parser stage (accept unknown instructions)"
    ),
    warnings: bool = typer.Option(True, "--warnings/--no-warnings", help="print build-check warnings"),
) -> None:
    """Parse FILE and print its instructions as JSON."""
    try:
        if file == "-":
            text, name = sys.stdin.read(), "Dockerfile"
            if syntax_only:
                doc, warns = parse_syntax(text, name).to_oracle_json(), []
            else:
                df = parse_dockerfile(text, name)
                doc, warns = df.to_oracle_json(), df.warnings
        elif syntax_only:
            raw = read_context_file(file, None, "Dockerfile")
            doc, warns = parse_syntax(raw.decode("utf-8"), file).to_oracle_json(), []
        else:
            df = parse_file(file)
            doc, warns = df.to_oracle_json(), df.warnings
    except SourceError as e:
        typer.echo(printable(e.format(), newlines=True), err=True)
        raise typer.Exit(2) from None
    except FileError as e:
        typer.echo(printable(str(e)), err=True)
        raise typer.Exit(2) from None
    except (OSError, UnicodeDecodeError) as e:
        typer.echo(printable(f"{file}: {e}", newlines=True), err=True)
        raise typer.Exit(2) from None
    except Exception as e:  # a parser bug: still one line, never a traceback
        typer.echo(printable(f"{file}: internal error in the Dockerfile parser: {type(e).__name__}: {e}"), err=True)
        raise typer.Exit(3) from None
    typer.echo(json_text(json.dumps(doc, ensure_ascii=False, indent=1)))
    if warnings:
        for w in warns:
            typer.echo(printable(w.format(), newlines=True), err=True)


if __name__ == "__main__":  # pragma: no cover
    app()


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="dockerfile")
