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
    src = "import os, backend.runtime.container\nfrom frontends.x import y\nfrom . import ops\ndef f():\n    import irctl\n"
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


# ------------------------------------------------------------------------------------------ backend rooms
# Each room of backend/ imports only rooms of a lower rank (docs/architecture.md); rooms of one rank
# never import each other. Top-level backend modules (errors, events, result, output, entitlements,
# userns) are the vocabulary every room shares: they import no room.
BACKEND_RANKS = {"": 0, "fs": 1, "reapi": 1, "fileops": 2, "snapshot": 2, "store": 3, "runtime": 3, "oci": 4, "ops": 5,
                 "export": 5, "remotecache": 6, "farm": 6, "solve": 7}


def backend_room(dotted: str) -> str:
    """``backend.fs.safefs`` → ``fs``; ``backend.errors`` (a top-level module) → ``""``."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in BACKEND_RANKS else ""


BACKEND_FILES = sorted((ROOT / "backend").rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_every_backend_module_lives_in_a_ranked_room() -> None:
    rooms = {p.name for p in (ROOT / "backend").iterdir() if (p / "__init__.py").exists()}
    assert rooms == set(BACKEND_RANKS) - {""}


@pytest.mark.parametrize("path", BACKEND_FILES, ids=[str(p.relative_to(ROOT)) for p in BACKEND_FILES])
def test_backend_rooms_point_downwards(path: Path) -> None:
    room = backend_room(module_name(path))
    bad = []
    for line, module in dotted_imports_in(path.read_text(encoding="utf-8"), path.relative_to(ROOT).with_suffix("").parts):
        if not module.startswith("backend.") or backend_room(module) == room:
            continue
        target = backend_room(module)
        if room == "" and target == "" and module.count(".") == 1:
            continue  # vocabulary modules may use each other
        if BACKEND_RANKS[target] >= BACKEND_RANKS[room]:
            bad.append(f"{path.relative_to(ROOT)}:{line}: {room or 'backend'} (rank {BACKEND_RANKS[room]}) must not "
                       f"import {module} (room {target or 'backend'}, rank {BACKEND_RANKS[target]})")
    assert not bad, "\n".join(bad)


# -------------------------------------------------------------------------------------------- import cycles
ALL_FILES = [p for _, p in FILES]
MODULES = {module_name(p): p for p in ALL_FILES}


def own_imports(path: Path) -> list[tuple[int, str, bool]]:
    return own_imports_in(path.read_text(encoding="utf-8"), path.relative_to(ROOT).with_suffix("").parts)


def own_imports_in(text: str, parts: tuple[str, ...]) -> list[tuple[int, str, bool]]:
    """(line, our module, at function level?) of every import of one of our modules, resolved to the
    module it names: ``from backend.ops import Step`` → ``backend.ops``, ``from frontends.dockerfile import
    typed`` → ``frontends.dockerfile.typed`` (a package's ``__init__`` runs first whichever way a
    submodule is imported, so that alone is no edge to the package)."""
    tree = ast.parse(text)
    nested = {n.lineno for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    package = parts[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            named = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - (node.level - 1)] + ((node.module,) if node.module else ())) \
                if node.level else node.module or ""
            subs = [f"{base}.{alias.name}" for alias in node.names]
            named = [s for s in subs if s in MODULES] + ([base] if not all(s in MODULES for s in subs) else [])
        else:
            continue
        for dotted in named:
            while dotted and dotted not in MODULES:
                dotted = dotted.rpartition(".")[0]
            if dotted and dotted != ".".join(parts):
                out.add((node.lineno, dotted, node.lineno in nested))
    return sorted(out)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root), on.add(root)
        while work:
            node, it = work[-1]
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt), on.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    break
                if nxt in on:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        m = stack.pop()
                        on.discard(m)
                        comp.append(m)
                        if m == node:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def test_no_import_cycle_anywhere() -> None:
    """Function-level imports count: a cycle hidden behind one is still a cycle (a package's
    ``__init__`` importing its own submodule that imports the package is one too)."""
    graph = {m: {t for _, t, _ in own_imports(p)} for m, p in MODULES.items()}
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" ↔ ".join(c) for c in found)


def test_own_imports_name_the_module_imported() -> None:
    src = ("import ir.ops, backend.errors\nfrom frontends.dockerfile import typed\nfrom backend.ops.workspace import Step\n"
           "def f():\n    from frontends import FrontendError\n")
    assert own_imports_in(src, ("backend", "probe")) == [(1, "backend.errors", False), (1, "ir.ops", False), (2, "frontends.dockerfile.typed", False),
                     (3, "backend.ops.workspace", False), (5, "frontends", True)]


def test_the_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


LAZY_MARK = "# lazy:"  # the reason a function-level import of our own module is worth it, beside it


@pytest.mark.parametrize("path", ALL_FILES, ids=[str(p.relative_to(ROOT)) for p in ALL_FILES])
def test_function_level_imports_of_our_modules_say_why(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    bad = [f"{path.relative_to(ROOT)}:{line}: function-level import of {module} without a `{LAZY_MARK} <why>` "
           "comment on its line or the line above (import it at module level unless start-up time needs it)"
           for line, module, nested in own_imports(path)
           if nested and LAZY_MARK not in lines[line - 1] and LAZY_MARK not in lines[line - 2]]
    assert not bad, "\n".join(bad)


# ---------------------------------------------------------------------------------------- module hygiene
def private_imports_in(text: str, parts: tuple[str, ...]) -> list[tuple[int, str]]:
    """(line, module.name) of every ``_private`` name imported from another of our modules: a name
    another module needs is part of its home's interface and says so by being public."""
    out = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] in OURS):
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")]
    return out


@pytest.mark.parametrize("path", ALL_FILES, ids=[str(p.relative_to(ROOT)) for p in ALL_FILES])
def test_no_private_name_is_imported_from_another_module(path: Path) -> None:
    bad = [f"{path.relative_to(ROOT)}:{line}: imports the private {name}"
           for line, name in private_imports_in(path.read_text(encoding="utf-8"), path.relative_to(ROOT).parts)]
    assert not bad, "\n".join(bad)


ENVIRONMENT_PROBES = {"in_user_namespace", "read_id_map", "geteuid", "getuid"}


def _called_name(node: ast.AST) -> str:
    if isinstance(node, ast.Call):
        f = node.func
        return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    return ""


def import_time_probes_in(text: str) -> list[tuple[int, str]]:
    """(line, name) of calls that ask the process's environment, made while a module is imported (at
    module level or in a class body), directly or through a function of the same module: their answer
    would be the namespace the module happened to be imported in, not the one it runs in
    (backend/userns.py enters the rootless namespace after the imports)."""
    tree = ast.parse(text)
    functions = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    probes = set(ENVIRONMENT_PROBES)
    while True:  # a module function that calls a probe is one
        more = {name for name, f in functions.items() if name not in probes
                and any(_called_name(n) in probes for n in ast.walk(f))}
        if not more:
            break
        probes |= more
    out = []
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue  # runs when called, not when imported
        if isinstance(node, ast.ClassDef):
            pending += node.body + node.decorator_list
            continue
        if _called_name(node) in probes:
            out.append((node.lineno, _called_name(node)))
        pending += list(ast.iter_child_nodes(node))
    return sorted(out)


@pytest.mark.parametrize("path", BACKEND_FILES, ids=[str(p.relative_to(ROOT)) for p in BACKEND_FILES])
def test_no_backend_module_asks_its_namespace_at_import(path: Path) -> None:
    bad = [f"{path.relative_to(ROOT)}:{line}: {name}() runs at import time"
           for line, name in import_time_probes_in(path.read_text(encoding="utf-8"))]
    assert not bad, "\n".join(bad)


def test_the_hygiene_checkers_see_what_they_look_for() -> None:
    assert private_imports_in("from backend.fs.safefs import _walk, walk\nfrom os import _exit\n", ("x",)) \
        == [(1, "backend.fs.safefs._walk")]
    src = ("PREFIX = 'user.' if in_user_namespace() else 'trusted.'\n"
           "class C:\n    ROOT = os.geteuid() == 0\n"
           "def f():\n    return in_user_namespace()\n"
           "g = lambda: os.getuid()\n"
           "def _prefix():\n    return 'user.' if f() else 'trusted.'\n"
           "XATTR_PREFIX = _prefix()\n")  # the shape of the bug issue 13 found in snapshot.py
    assert import_time_probes_in(src) == [(1, "in_user_namespace"), (3, "geteuid"), (9, "_prefix")]


TEST_FILES = sorted(p for p in (ROOT / "tests").rglob("*.py")  # test code, not the build files tests read
                    if p.name.startswith("test_") or p.name == "conftest.py" or p.parent.name == "support")


@pytest.mark.parametrize("path", TEST_FILES, ids=[str(p.relative_to(ROOT)) for p in TEST_FILES])
def test_no_test_module_imports_another_test_module(path: Path) -> None:
    """What tests share lives in ``tests/support/`` (or a conftest), not in a test module that others
    import and so run twice."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    bad = [f"{path.relative_to(ROOT)}:{line}: imports {module}"
           for line, module in dotted_imports_in(path.read_text(encoding="utf-8"), parts)
           if module.startswith("tests.") and module.split(".")[-1].startswith("test_")
           and module != ".".join(parts)]
    assert not bad, "\n".join(bad)
