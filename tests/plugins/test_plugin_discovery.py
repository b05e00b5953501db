"""A frontend from a separately installed distribution is discovered through the
``irctl.frontends`` entry points: ``irctl frontends`` lists it, file names it claims pick it,
``--frontend demo`` selects it, and ``irctl build`` builds with it.

The demo package (``irctl_frontend_demo/``) is installed with ``pip install --no-deps
--no-build-isolation --target`` into a temporary directory that only the CLI subprocess sees
(through ``PYTHONPATH``), so the environment running the tests is left as it was.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import Result, run_image
from tests.support.cli import irctl as run_irctl

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("plugin-site")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(target), str(HERE / "irctl_frontend_demo")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (target / "irctl_frontend_demo.py").exists()
    return target


def irctl(*args, plugin: Path | None, env: dict | None = None) -> Result:
    """The CLI with `plugin` (a pip --target folder) on the path, ahead of the project."""
    path = os.pathsep.join(p for p in (str(plugin) if plugin else "", str(ROOT)) if p)
    return run_irctl(*args, env={"PYTHONPATH": path, **(env or {})})


def test_frontends_lists_the_plugin_and_the_built_ins(plugin_path):
    r = irctl("frontends", plugin=plugin_path)
    assert r.code == 0, r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines()[1:] if line.strip()}
    assert {"dockerfile", "toml", "pydsl", "demo"} <= set(rows)
    assert "*.greet" in rows["demo"] and rows["demo"].split()[-1] == "irctl-frontend-demo"
    assert "irctl.toml" in rows["toml"] and "build.py" in rows["pydsl"]


@pytest.mark.parametrize("with_plugin", [True, False], ids=["plugin", "built-ins"])
def test_the_build_reads_the_same_entry_points_as_importlib_metadata(plugin_path, with_plugin):
    """``irctl build`` reads the entry points itself (irctl.compiling._entry_point_specs, to skip
    importing importlib.metadata); it must find what ``frontends.available()`` finds."""
    code = ("import sys; from frontends import available; from irctl.compiling import _installed_frontends; "
            "assert 'importlib.metadata' not in sys.modules; mine = _installed_frontends(); "
            "assert 'importlib.metadata' not in sys.modules; theirs = available(); "
            "assert {k: v[0] for k, v in mine.items()} == {k: v[0] for k, v in theirs.items()}, (mine, theirs); "
            "print(' '.join(sorted(mine)))")
    extra = {"PYTHONPATH": os.pathsep.join(p for p in (str(plugin_path) if with_plugin else "", str(ROOT)) if p)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **extra}, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == sorted(["dockerfile", "pydsl", "toml", *(["demo"] if with_plugin else [])])


def test_without_the_plugin_it_is_unknown(tmp_path):
    (tmp_path / "hello.greet").write_text("from busybox\nsay hi\n")
    r = irctl("compile", tmp_path, "-f", tmp_path / "hello.greet", "-o", tmp_path / "g.ir", plugin=None)
    assert r.code != 0 and "no frontend claims this file" in r.stderr


def test_the_plugin_compiles_by_name_and_by_flag(plugin_path, tmp_path, busybox_layout):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "hello.greet").write_text("from busybox\nsay hello\n")
    (ctx / "greetings.txt").write_text("from busybox\nsay hello\n")
    layout = ["--build-context", f"busybox=oci-layout://{busybox_layout}"]
    env = {"IRCTL_CACHE_DIR": str(tmp_path / "cache")}
    by_name = irctl("compile", ctx, "-f", ctx / "hello.greet", *layout, "-o", tmp_path / "a.ir", plugin=plugin_path, env=env)
    assert by_name.code == 0, by_name.stderr
    by_flag = irctl("compile", ctx, "-f", ctx / "greetings.txt", "--frontend", "demo", *layout, "-o", tmp_path / "b.ir",
                    plugin=plugin_path, env=env)
    assert by_flag.code == 0, by_flag.stderr
    assert irctl("validate", tmp_path / "a.ir", plugin=None).code == 0
    dump = irctl("dump", tmp_path / "a.ir", plugin=None)
    assert "hello.greet:2" in dump.stdout, dump.stdout


@pytest.mark.e2e
def test_irctl_build_with_the_plugin_frontend(plugin_path, tmp_path, busybox_layout):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Greetfile").write_text("from busybox\nsay hello\nsay from a plugin\n")
    out = tmp_path / "image"
    r = irctl("build", ctx, "-f", ctx / "Greetfile", "--frontend", "demo",
              "--build-context", f"busybox=oci-layout://{busybox_layout}",
              "--output", f"type=oci,tar=false,dest={out}", "-t", "demo:latest", "--progress", "plain",
              plugin=plugin_path, env={"IRCTL_CACHE_DIR": str(tmp_path / "cache")})
    assert r.code == 0, r.stderr
    assert run_image(out, "latest", tmp_path) == "hello\nfrom a plugin\n"
