"""``irctl debug build …``: ``irctl build --on-error=shell …`` spelled as ``docker buildx debug build``.

buildx's own options come before the word ``build`` (``--on``, ``--invoke``); everything after it is
``irctl build``'s, ``--debug-secrets`` included.  ``--on=always`` (a shell in the result even when the
build succeeds) is refused: irctl has no container of a finished image to open one in.
"""

from __future__ import annotations

from typing import List

import typer

from irctl.errors import UserError, user_errors


def debug(
    ctx: typer.Context,
    command: str = typer.Argument(..., help="The command to debug: build."),
    on: str = typer.Option("error", "--on", help="When to launch the shell: error (always is not supported)."),
    invoke: str = typer.Option("/bin/sh", "--invoke", help="Command to run in the failed step's container."),
    args: List[str] = typer.Argument(None, help="irctl build's options and CONTEXT."),
) -> None:
    """Build, and open a shell in the container of a RUN step that fails."""
    with user_errors():
        if command != "build":
            raise UserError(f"irctl debug {command!r}: only `irctl debug build …` is supported")
        if on != "error":
            raise UserError(f"irctl debug --on {on!r}: only --on=error is supported (a shell in a failed "
                            "step's container)")
    from irctl import build, usage  # lazy: `irctl --help` imports every command module

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, cls=usage.Group)  # one-line usage errors
    app.callback()(_group)
    build.register(app)
    argv = usage.spell_argv(["build", "--on-error=shell", "--debug-shell", invoke, *(args or []), *ctx.args])
    app(argv, prog_name="irctl debug", standalone_mode=True)


def _group() -> None:
    """Keeps the inner app a group, so ``usage.Group`` sees ``build``'s usage errors (as ``irctl build``)."""


def register(app: typer.Typer) -> None:
    app.command("debug", context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                         "allow_interspersed_args": False})(debug)
