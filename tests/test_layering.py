"""Data flows one way (docs/architecture.md): parse every import and fail on a forbidden arrow.

    ir/         imports nothing of ours; besides the standard library only msgpack, msgspec, zstandard, jsonschema
    frontends/  imports ir (and itself) only; frontends/common/ (the shared stage layer every frontend
                lowers through) imports no frontend: dockerfile/ → common/, never the reverse
    backend/    imports ir (and itself) only
    irctl/      the composition root: may import everything
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"ir", "frontends", "backend", "irctl"}
ALLOWED = {"ir": {"ir"}, "frontends": {"frontends", "ir"}, "backend": {"backend", "ir"}, "irctl": OURS}
IR_THIRD_PARTY = {"msgpack", "msgspec", "zstandard", "jsonschema"}
# sub-packages that must not import certain siblings: (package dir, forbidden dotted prefixes)
SUBPACKAGE_RULES = [("frontends/common", ("frontends.dockerfile", "frontends.toml", "frontends.pydsl"))]


def imports(path: Path, package: str) -> list[tuple[int, str]]:
    return imports_in(path.read_text(encoding="utf-8"), path.relative_to(ROOT).with_suffix("").parts, package)


def imports_in(text: str, parts: tuple[str, ...], package: str) -> list[tuple[int, str]]:
    """(line, top-level module) of every import (function-level ones too), relative imports resolved."""
    tree = ast.parse(text)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - node.level] if parts[-1] != "__init__" or node.level > 1 else parts[:-1]
                out.append((node.lineno, (base or (package,))[0]))
            elif node.module:
                out.append((node.lineno, node.module.split(".")[0]))
    return out


def dotted_imports_in(text: str, parts: tuple[str, ...]) -> list[tuple[int, str]]:
    """(line, dotted module) of every import, relative ones resolved; ``from x import y`` also gives
    ``x.y`` (``y`` may be a module)."""
    package = parts[:-1]  # the package a module (or an __init__) is in
    out = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - (node.level - 1)] + ((node.module,) if node.module else ()))
            else:
                base = node.module or ""
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return out


FILES = [(pkg, p) for pkg in sorted(ALLOWED) for p in sorted((ROOT / pkg).rglob("*.py"))]


def test_there_is_something_to_check() -> None:
    assert {pkg for pkg, _ in FILES} == OURS


@pytest.mark.parametrize("package, path", FILES, ids=[str(p.relative_to(ROOT)) for _, p in FILES])
def test_no_forbidden_arrow(package: str, path: Path) -> None:
    bad = []
    for line, module in imports(path, package):
        if module in OURS and module not in ALLOWED[package]:
            bad.append(f"{path.relative_to(ROOT)}:{line}: {package} must not import {module}")
        if package == "ir" and module not in OURS and module not in sys.stdlib_module_names \
                and module not in IR_THIRD_PARTY and module != "__future__":
            bad.append(f"{path.relative_to(ROOT)}:{line}: ir may use only the standard library and "
                       f"{', '.join(sorted(IR_THIRD_PARTY))}, not {module}")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_every_import_form() -> None:
    src = "import os, backend.runtime\nfrom frontends.x import y\nfrom . import ops\ndef f():\n    import irctl\n"
    assert imports_in(src, ("ir", "mod"), "ir") == [(1, "os"), (1, "backend"), (2, "frontends"), (3, "ir"), (5, "irctl")]


SUB_FILES = [(d, p) for d, _ in SUBPACKAGE_RULES for p in sorted((ROOT / d).rglob("*.py"))]


@pytest.mark.parametrize("subpackage, path", SUB_FILES, ids=[str(p.relative_to(ROOT)) for _, p in SUB_FILES])
def test_no_forbidden_sibling_import(subpackage: str, path: Path) -> None:
    forbidden = dict(SUBPACKAGE_RULES)[subpackage]
    parts = path.relative_to(ROOT).with_suffix("").parts
    bad = [f"{path.relative_to(ROOT)}:{line}: {subpackage} must not import {module}"
           for line, module in dotted_imports_in(path.read_text(encoding="utf-8"), parts)
           if any(module == f or module.startswith(f + ".") for f in forbidden)]
    assert not bad, "\n".join(bad)


def test_the_sibling_checker_sees_every_import_form() -> None:
    src = ("import frontends.dockerfile.expand\nfrom frontends import dockerfile\nfrom ..dockerfile import x\n"
           "from . import stage\ndef f():\n    from frontends.toml.recipe import y\n")
    found = {m for _, m in dotted_imports_in(src, ("frontends", "common", "lower"))}
    assert {"frontends.dockerfile.expand", "frontends.dockerfile", "frontends.dockerfile.x",
            "frontends.common.stage", "frontends.toml.recipe"} <= found
    assert {m for _, m in dotted_imports_in("from . import x\n", ("frontends", "common", "__init__"))} \
        == {"frontends.common", "frontends.common.x"}
