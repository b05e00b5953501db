"""The spec is enough to write a generator in another language: run ``examples/node-generator``
(Node.js, written from ``spec/ir.md`` alone) and compare its file with ``ir.builder``'s."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ir import builder as b
from ir import codec, ops, validate
from tests.support.ir_cli import app, runner

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node-generator"
PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
RECIPE = b'FROM busybox:1.36\nRUN echo hello from node > /hello\nCMD ["cat", "/hello"]\n'


def same_graph_in_python() -> ops.Document:
    base = b.image("docker.io/library/busybox:1.36",
                   digest="sha256:7b3ccabffc97de872a30dfd234fd972a66d247c8cfc69b0550f276481852627c")
    run = base.with_meta("[node] RUN echo hello from node > /hello", "node", [ops.Location(0, 2)]).run(
        ["/bin/sh", "-c", "echo hello from node > /hello"], env=[PATH])
    img = run.with_image(ops.ImageConfig(env=(PATH,), cmd=("cat", "/hello")),
                         [ops.HistoryEntry(created_by="RUN echo hello from node > /hello")])
    return b.build_document({"default": img}, [ops.SourceFile("recipe", "node", RECIPE)])


@pytest.fixture(scope="module")
def generator(tmp_path_factory) -> Path:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    if (EXAMPLE / "node_modules" / "@msgpack" / "msgpack").is_dir():
        return EXAMPLE
    work = tmp_path_factory.mktemp("node-generator")
    for name in ("package.json", "package-lock.json", "generate.mjs"):
        shutil.copy(EXAMPLE / name, work / name)
    npm = shutil.which("npm")
    if npm is None or subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=work, capture_output=True,
                                     timeout=300).returncode != 0:
        pytest.skip("cannot install @msgpack/msgpack (npm ci failed)")
    return work


def test_node_output_is_valid_and_byte_identical_to_the_builder(generator: Path, tmp_path: Path) -> None:
    out = tmp_path / "node.irg"
    subprocess.run(["node", str(generator / "generate.mjs"), str(out)], check=True, timeout=60)
    data = out.read_bytes()
    doc = validate.load_and_validate(data)
    expected = same_graph_in_python()
    assert sorted(doc.ops) == sorted(expected.ops)  # the same digests
    assert doc == expected
    assert data == codec.dump_document(expected, compress=False)


def test_node_output_passes_irctl_validate(generator: Path, tmp_path: Path) -> None:
    out = tmp_path / "node.irg"
    subprocess.run(["node", str(generator / "generate.mjs"), str(out)], check=True, timeout=60)
    result = runner.invoke(app, ["validate", str(out)])
    assert result.exit_code == 0
    assert result.stdout.endswith("valid IR v1: 3 ops, 1 roots (default), 3 features (exec, image, source.image)\n")
