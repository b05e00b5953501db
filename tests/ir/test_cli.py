"""``irctl dump`` and ``irctl validate`` through typer's CliRunner, asserting exact output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ir import builder as b
from ir import codec, jsonform, ops
from tests.ir.strategies import D1
from tests.support.ir_cli import app, runner


SRC = ops.SourceFile("Dockerfile", "dockerfile", b"FROM busybox:1.36\nRUN --mount=type=secret,id=tok make\nCOPY app /app/\n")


def graph(step: str = "make") -> ops.Document:
    ctx = b.local("context")
    base = b.image("docker.io/library/busybox:1.36", digest=D1)
    run = base.with_meta("[2/3] RUN make", "build", [ops.Location(0, 2)]).run(
        ["sh", "-c", step], mounts=[b.secret("tok"), b.cache("/root/.cache", "go"), b.bind("/src", ctx)])
    copied = run.with_meta("[3/3] COPY app /app/", "build", [ops.Location(0, 3, 1, 3, 14)]).copy(ctx, "/app", "/app/")
    return b.build_document({"default": copied.with_image(ops.ImageConfig(cmd=("/app/run",))), "test": run}, [SRC])


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, str]:
    out = {}
    for name, doc in (("a", graph()), ("b", graph("make test"))):
        path = tmp_path / f"{name}.irg"
        path.write_bytes(codec.dump_document(doc))
        out[name] = str(path)
    bad = graph()
    bad_exec = next(op for op in bad.ops.values() if op.exec)
    broken = ops.Document(1, bad.ops, {"default": ops.Ref(codec.op_digest(bad_exec), 5)}, bad.features)
    (tmp_path / "bad.irg").write_bytes(codec.dump_document(broken))
    out["bad"] = str(tmp_path / "bad.irg")
    (tmp_path / "junk.irg").write_bytes(b"\x89IRG\r\n\x1a\n\x00\x01\x00\x00\xc1")
    out["junk"] = str(tmp_path / "junk.irg")
    return out


DUMP = """\
5 ops, 2 roots, features: exec, exec.mount.bind, exec.mount.cache, exec.mount.secret, file.copy, image, source.image, source.local

target default = 37dcdea11c54
  [build]
  39ccdfcb86b6  source image docker.io/library/busybox:1.36@7b3ccabffc97
  248929e14b30  source local context
  c2f4a69ba92f  exec   sh -c make  (Dockerfile:2)
      inputs: 39ccdfcb86b6, 248929e14b30
      mount / bind 39ccdfcb86b6 → output 0
      mount /run/secrets/tok secret id=tok
      mount /root/.cache cache id=go shared
      mount /src bind 248929e14b30 ro
  7170c4c5d077  file   copy 248929e14b30:/app → /app/  (Dockerfile:3)
      inputs: c2f4a69ba92f, 248929e14b30
  37dcdea11c54  image  linux/amd64, cmd ["/app/run"]
      inputs: 7170c4c5d077

target test = c2f4a69ba92f  (listed above)
"""


def test_dump_text(files) -> None:
    result = runner.invoke(app, ["dump", files["a"]])
    assert result.exit_code == 0, result.output
    assert result.stdout == DUMP


def test_dump_reads_stdin(files) -> None:
    result = runner.invoke(app, ["dump", "-"], input=Path(files["a"]).read_bytes())
    assert result.exit_code == 0 and result.stdout == DUMP


def test_dump_json_is_the_schema_json_form(files) -> None:
    result = runner.invoke(app, ["dump", "--format", "json", files["a"]])
    assert result.exit_code == 0
    value = json.loads(result.stdout)
    assert jsonform.document_from_json(value) == graph()
    assert value["sources"][0]["data"] == "RlJPTSBidXN5Ym94OjEuMzYKUlVOIC0tbW91bnQ9dHlwZT1zZWNyZXQsaWQ9dG9rIG1ha2UKQ09QWSBhcHAgL2FwcC8K"
    assert result.stdout == jsonform.dumps(graph()) + "\n"


def test_dump_dot(files) -> None:
    result = runner.invoke(app, ["dump", "--format", "dot", files["a"]])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "digraph irctl {" and lines[-1] == "}"
    assert '  "c2f4a69ba92f" [label="c2f4a69ba92f exec\\nsh -c make\\nDockerfile:2"];' in lines
    assert '  "39ccdfcb86b6" -> "c2f4a69ba92f";' in lines
    assert '  "c2f4a69ba92f" -> "root test";' in lines


DIFF = """\
~ c2f4a69ba92f → 3ec8002ff57f  exec   sh -c 'make test'  (Dockerfile:2)
      changed: exec.args[2]
~ 7170c4c5d077 → a2510ae887ab  file   copy 248929e14b30:/app → /app/  (Dockerfile:3)
      changed: inputs[0].op
~ 37dcdea11c54 → 8dd6614b1d26  image  linux/amd64, cmd ["/app/run"]
      changed: inputs[0].op
root default: 37dcdea11c54 → 8dd6614b1d26
root test: c2f4a69ba92f → 3ec8002ff57f
0 removed, 0 added, 3 changed
"""


def test_dump_diff(files) -> None:
    result = runner.invoke(app, ["dump", "--diff", files["a"], files["b"]])
    assert result.exit_code == 1
    assert result.stdout == DIFF
    same = runner.invoke(app, ["dump", "--diff", files["a"], files["a"]])
    assert same.exit_code == 0 and same.stdout == "no differences\n"


def test_validate_ok(files) -> None:
    result = runner.invoke(app, ["validate", files["a"]])
    assert result.exit_code == 0
    assert result.stdout == (
        f"{files['a']}: valid IR v1: 5 ops, 2 roots (default, test), 8 features (exec, exec.mount.bind, "
        "exec.mount.cache, exec.mount.secret, file.copy, image, source.image, source.local)\n")


def test_validate_errors_are_located_and_exit_2(files) -> None:
    result = runner.invoke(app, ["validate", files["bad"]])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"error: {files['bad']}: roots.default.output: output 5 out of range: that op has 1 output(s)\n"


@pytest.mark.parametrize("cmd", ["validate", "dump"])
def test_garbage_exits_2_without_traceback(files, cmd: str) -> None:
    result = runner.invoke(app, [cmd, files["junk"]])
    assert result.exit_code == 2
    assert result.stderr == f"error: {files['junk']}: payload is not valid msgpack: FormatError\n"
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_missing_file_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(tmp_path / "nope.irg")])
    assert result.exit_code == 2
    assert result.stderr == f"error: {tmp_path / 'nope.irg'}: No such file or directory\n"


def test_usage_errors(files) -> None:
    result = runner.invoke(app, ["dump", "--format", "yaml", files["a"]])
    assert result.exit_code == 2 and result.stderr == "error: unknown --format 'yaml' (choose text, json, dot)\n"
    result = runner.invoke(app, ["dump", "--diff", files["a"]])
    assert result.exit_code == 2 and result.stderr == "error: --diff needs two files: irctl dump --diff OLD NEW\n"
    result = runner.invoke(app, ["dump", files["a"], files["b"]])
    assert result.exit_code == 2 and "did you mean --diff?" in result.stderr


def test_several_errors_one_per_line(tmp_path: Path) -> None:
    doc = graph()
    a = ops.Document(1, doc.ops, {"default": ops.Ref(next(iter(doc.roots.values())).op, 7),
                                  "x": ops.Ref("sha256:" + "0" * 64)}, doc.features)
    path = tmp_path / "two.irg"
    path.write_bytes(codec.dump_document(a))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"{path}: roots.default.output: output 7 out of range: that op has 1 output(s)\n"
        f"{path}: roots.x.op: refers to op sha256:000000000000… which is not in the document\n")
