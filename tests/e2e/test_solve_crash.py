"""A build killed with SIGKILL leaves nothing half-written visible, and the next build cleans up after it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.snapshot.layertree import layer_tree_digest
from ir import builder as b
from ir.codec import dump_document
from tests.e2e.conftest import Solving, read_file
from tests.support import pids_with

pytestmark = pytest.mark.e2e

CHILD = """
import sys
from pathlib import Path
from backend.solve.solver import SolveOptions, solve
from ir.codec import load_document
doc = load_document(Path(sys.argv[1]).read_bytes())
def on_event(e):
    if e.kind == "log":
        print(e.text, flush=True)
solve(doc, ["default"], SolveOptions(cache_dir=sys.argv[2], oci_layouts={"busybox": Path(sys.argv[3])},
                                     on_event=on_event))
"""


def test_killed_build_leaves_no_partial_state(solving: Solving, tmp_path: Path) -> None:
    marker = "irctl-crash-test-4242"  # names the orphaned container's processes
    step = solving.base().run(["sh", "-c", "dd if=/dev/zero of=/big bs=1k count=512 2>/dev/null; "
                                           f": {marker}; echo running; sleep 600; echo never"])
    graph = tmp_path / "g.ir"
    graph.write_bytes(dump_document(b.build_document({"default": step})))
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(graph), str(solving.cache), str(solving.layout)],
                             stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "running"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    state = next((solving.cache / "tmp").glob("s-*.state")).read_text()
    assert pids_with(marker), "the container outlives the build that ran it ..."

    res = solving.solve(solving.base().run(["sh", "-c", "echo after > /after"]))
    assert read_file(res["default"], "/after") == b"after\n"
    pulled = res["default"].layers[0].name  # named by its diff_id, not by its tree digest
    for layer in (solving.cache / "layers").iterdir():
        if layer.name != pulled:
            assert layer_tree_digest(layer) == "sha256:" + layer.name, "a layer dir does not match its id"
    assert [p.name for p in (solving.cache / "tmp").iterdir() if p.name.startswith("s-")] == []
    with open("/proc/self/mountinfo") as f:
        assert str(solving.cache) not in f.read()
    assert not Path(state).exists()  # the orphaned container was killed and its state removed
    deadline = time.monotonic() + 10
    while pids_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pids_with(marker)  # ... until the next build's crash recovery kills it
