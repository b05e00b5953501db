"""The IR commands (`irctl dump`, `irctl validate`) on a typer app of their own, for tests that
invoke them in-process with typer's runner."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from irctl import dump as dump_cmd
from irctl import validate as validate_cmd

app = typer.Typer()
dump_cmd.register(app)
validate_cmd.register(app)
runner = CliRunner()
