"""What the CLI's ``# lazy:`` imports (the rule of ``tests/test_layering.py``) keep away from the no-op
rebuild stays away."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_fast_path_module_loads_no_frontend_validator_solver_or_typer():
    """What the ``# lazy:`` imports of ``irctl/fastpath.py`` and ``irctl/entry.py`` keep off the
    no-op rebuild (``irctl build`` of an unchanged project imports ``irctl.fastpath`` only)."""
    code = ("import sys, irctl.entry, irctl.fastpath; "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('typer', 'rich', 'httpx', 'lark', 'ir', 'frontends', 'backend', 'irctl'))))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                cwd=ROOT).stdout.split())
    assert "irctl.fastpath" in loaded
    heavy = {"typer", "rich", "httpx", "lark", "ir.validate", "ir.codec", "frontends.dockerfile",
             "backend.solve.solver", "backend.oci.registry", "backend.export.reuse", "irctl.app"}
    assert loaded & heavy == set()


def test_the_solver_loads_no_http_client_until_a_step_fetches():
    """Every solve imports every op handler (``backend.ops.registry``), the http source's too: what
    only a fetch needs (httpx, urllib.request with http.client and email, ~15 ms) stays unloaded."""
    code = ("import sys, backend.solve.solver; "
            "print(' '.join(m for m in ('httpx', 'urllib.request', 'http.client', 'backend.oci.transport') "
            "if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=ROOT).stdout.split()
    assert loaded == []


def test_a_build_without_a_farm_loads_no_grpc_or_protobuf():
    """gRPC and protobuf (~60 ms) load only when a ``Remote`` is made (``--remote-cache``, ``--remote``,
    ``irctl worker``): not for ``irctl --help``, not for a build's command and solver modules."""
    code = ("import sys, irctl.entry, irctl.fastpath, irctl.app, irctl.build, backend.solve.solver; "
            "print(' '.join(m for m in sys.modules if m.split('.')[0] == 'grpc' or m.startswith('google.protobuf')"
            " or m.startswith('backend.reapi')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=ROOT).stdout.split()
    assert loaded == []
    help_ = subprocess.run([sys.executable, "-X", "importtime", "-m", "irctl", "--help"], capture_output=True,
                           text=True, cwd=ROOT)
    assert help_.returncode == 0 and "import time:" in help_.stderr
    assert [line for line in help_.stderr.splitlines() if line.rstrip().endswith((" grpc", " google.protobuf"))] == []
