"""The typer application: registers one module per command.

Command modules import their heavy dependencies inside the command function, so ``irctl --help``
and a cached rebuild do not pay for what they do not use; each such import says why beside it
(``# lazy:``, checked by ``tests/test_lazy_imports.py``), everything else is imported at the top.
"""

from __future__ import annotations

import signal
import sys

import typer

from irctl import errors, usage
from irctl.commands import register_all

app = typer.Typer(
    name="irctl",
    help="Daemonless, rootless container-image builder with a content-addressed build-graph IR.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=usage.Group,  # an unknown option: one line naming the closest real one
)


@app.callback()
def _group() -> None:
    """Keeps irctl a command group even when only the invoked command is registered."""


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C: a build cancels and cleans up after itself


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)

    register_all(app)
    try:
        app(args=usage.spell_argv(sys.argv[1:]))
    except errors.UserError as e:
        errors.report(e)
        sys.exit(e.exit_code)
