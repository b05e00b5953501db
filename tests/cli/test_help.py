"""Every command's ``--help`` renders: typer hands help texts to rich as markup, where a bracketed
word such as ``[/variant]`` is a closing tag and ends ``--help`` in a traceback."""

from __future__ import annotations

import pytest

from tests.support.cli import irctl

COMMANDS = [(), ("build",), ("compile",), ("solve",), ("dump",), ("validate",), ("cache",), ("cache", "prune"),
            ("cache", "du"), ("frontends",), ("dockerfile", "parse"), ("debug",)]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "irctl")
def test_help_renders(command, tmp_path):
    r = irctl(*command, "--help", env={"IRCTL_CACHE_DIR": str(tmp_path / "cache")})
    assert r.code == 0, r.stderr
    assert "Traceback" not in r.stderr and "Usage:" in r.stdout
