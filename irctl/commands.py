"""The command modules; each exposes ``register(app)``.  Add a command by adding it here.

Only the module of the command being run is imported (all of them for ``--help`` or an unknown
word), so ``irctl build`` never pays for the Dockerfile parser behind ``irctl dockerfile``.
"""

from __future__ import annotations

import importlib
import sys

import typer

# command word -> module
COMMANDS = {
    "build": "build", "compile": "compile", "solve": "solve", "dump": "dump", "validate": "validate",
    "cache": "cache", "frontends": "frontends_cmd", "dockerfile": "dockerfile_cmd", "debug": "debug_cmd",
    "worker": "worker_cmd",
}


def register_all(app: typer.Typer, argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    word = next((a for a in argv if not a.startswith("-")), None)
    names = [COMMANDS[word]] if word in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for name in names:
        importlib.import_module(f"irctl.{name}").register(app)
