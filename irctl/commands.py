"""The list of command modules; each exposes ``register(app)``.  Add a command by adding a module
here — nothing else in the CLI changes."""

from __future__ import annotations

import importlib
from typing import Callable

import typer

_MODULES = ("dump", "validate", "compile", "build", "solve", "cache", "frontends_cmd", "dockerfile_cmd")


def _load() -> list[Callable[[typer.Typer], None]]:
    found = []
    for name in _MODULES:
        try:
            module = importlib.import_module(f"irctl.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"irctl.{name}":
                continue  # not written yet
            raise
        found.append(module.register)
    return found


REGISTRY = _load()
