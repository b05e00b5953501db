"""The CLI's function-level imports (``irctl/``): each import of the project's own packages inside a
function says why beside it (a ``# lazy:`` comment on its line or on a comment line heading its
block of imports), and what they keep away from the no-op rebuild stays away.  Everything else is
imported at the top of its module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = ("ir", "frontends", "backend", "irctl")


def _nested_imports(tree: ast.Module):
    """Import statements inside functions (at any depth), with their module name."""
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom):
                yield node, ("." * node.level) + (node.module or "")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    yield node, alias.name


def _has_reason(lines: list[str], lineno: int) -> bool:
    """``# lazy:`` on the import's line, or on a comment line above it with only imports between."""
    i = lineno - 1
    if "# lazy:" in lines[i]:
        return True
    i -= 1
    while i >= 0:
        text = lines[i].strip()
        if text.startswith("#"):
            if text.startswith("# lazy:"):
                return True
        elif not text.startswith(("from ", "import ")) and not text.startswith(("#", ")")):
            return False
        i -= 1
    return False


def unexplained_imports(root: Path) -> list[str]:
    found = []
    for path in sorted(root.glob("*.py")):
        text = path.read_text("utf-8")
        lines = text.splitlines()
        for node, module in _nested_imports(ast.parse(text)):
            if (module.startswith(".") or module.split(".")[0] in OURS) and not _has_reason(lines, node.lineno):
                found.append(f"{path.name}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    return sorted(set(found))


def test_every_function_level_import_of_our_packages_in_irctl_says_why():
    assert unexplained_imports(ROOT / "irctl") == []


def test_the_rule_finds_an_unexplained_import(tmp_path):
    (tmp_path / "m.py").write_text(
        "import os\n\n\ndef f():\n    from backend.cache import default_root\n    return default_root\n\n\n"
        "def g():\n    # lazy: measured\n    from backend.cache import default_root\n    from ir import ops\n"
        "    import json\n    return default_root, ops, json\n\n\n"
        "def h():\n    x = 1\n    from irctl.errors import UserError  # lazy: measured\n    return x, UserError\n")
    assert unexplained_imports(tmp_path) == ["m.py:5: from backend.cache import default_root"]


def test_the_fast_path_module_loads_no_frontend_validator_solver_or_typer():
    """What the ``# lazy:`` imports of ``irctl/fastpath.py`` and ``irctl/entry.py`` keep off the
    no-op rebuild (``irctl build`` of an unchanged project imports ``irctl.fastpath`` only)."""
    code = ("import sys, irctl.entry, irctl.fastpath; "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('typer', 'rich', 'httpx', 'lark', 'ir', 'frontends', 'backend', 'irctl'))))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                cwd=ROOT).stdout.split())
    assert "irctl.fastpath" in loaded
    heavy = {"typer", "rich", "httpx", "lark", "ir.validate", "ir.codec", "frontends.dockerfile", "backend.solver",
             "backend.registry", "backend.export.reuse", "irctl.app"}
    assert loaded & heavy == set()
