"""The CLI's function-level imports (``irctl/``): each import of the project's own packages inside a
function says why beside it (``# lazy:``, the rule of ``tests/test_layering.py``), and what they keep
away from the no-op rebuild stays away."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests import test_layering as layering

IRCTL = [p for p in layering.ALL_FILES if p.relative_to(layering.ROOT).parts[0] == "irctl"]


@pytest.mark.parametrize("path", IRCTL, ids=[p.name for p in IRCTL])
def test_irctl_function_level_imports_say_why(path):
    """``test_layering.test_function_level_imports_of_our_modules_say_why`` for ``irctl/``, which its
    ``KNOWN_LAZY`` still lists: drop this test once those entries are gone."""
    lines = path.read_text(encoding="utf-8").splitlines()
    bad = [f"irctl/{path.name}:{line}: {module}" for line, module, nested in layering.own_imports(path)
           if nested and layering.LAZY_MARK not in lines[line - 1] and layering.LAZY_MARK not in lines[line - 2]]
    assert not bad, "\n".join(bad)


def test_the_fast_path_module_loads_no_frontend_validator_solver_or_typer():
    """What the ``# lazy:`` imports of ``irctl/fastpath.py`` and ``irctl/entry.py`` keep off the
    no-op rebuild (``irctl build`` of an unchanged project imports ``irctl.fastpath`` only)."""
    code = ("import sys, irctl.entry, irctl.fastpath; "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('typer', 'rich', 'httpx', 'lark', 'ir', 'frontends', 'backend', 'irctl'))))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                cwd=layering.ROOT).stdout.split())
    assert "irctl.fastpath" in loaded
    heavy = {"typer", "rich", "httpx", "lark", "ir.validate", "ir.codec", "frontends.dockerfile",
             "backend.solve.solver", "backend.oci.registry", "backend.export.reuse", "irctl.app"}
    assert loaded & heavy == set()
