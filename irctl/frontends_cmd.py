"""``irctl frontends``: what frontends are installed, what files they claim, whether they execute
their build files as programs (then chosen only by ``--frontend`` or ``-f``, and run sandboxed), who
provides them."""

from __future__ import annotations

import typer

from irctl.errors import UserError


def frontends_cmd() -> None:
    """List the installed frontends."""
    from frontends import FrontendError, available, executes_code  # lazy: --help imports every command module

    try:
        found = available()
    except FrontendError as e:
        raise UserError(str(e)) from None
    width = max([len(n) for n in found] + [4])
    typer.echo(f"{'NAME':<{width}}  {'FILES':<50}  {'RUNS CODE':<9}  FROM")
    for name in sorted(found):
        frontend, dist = found[name]
        runs = "yes" if executes_code(frontend) else "no"
        typer.echo(f"{name:<{width}}  {', '.join(frontend.patterns):<50}  {runs:<9}  {dist}")


def register(app: typer.Typer) -> None:
    app.command("frontends")(frontends_cmd)
