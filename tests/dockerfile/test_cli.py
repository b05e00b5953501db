"""``irctl dockerfile parse``: exact JSON on success, a located message and exit 2 on failure."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from irctl.dockerfile_cmd import app
from tests.dockerfile.corpus import CORPUS, load_oracle, needs_corpus

runner = CliRunner()


def run(*args, input=None):
    return runner.invoke(app, ["parse", *args], input=input)


@needs_corpus
def test_prints_the_oracle_json():
    path = CORPUS / "probes" / "heredoc-variants.Dockerfile"
    res = run(str(path), "--no-warnings")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == load_oracle(path)
    # byte for byte the oracle's file (indent=1, non-ASCII kept, final newline)
    assert res.stdout == path.with_name(path.name + ".parse.json").read_text("utf-8")


def test_stdin_and_warnings():
    res = run("-", input="FROM a\nMAINTAINER me\n")
    assert res.exit_code == 0
    assert json.loads(res.stdout)["instructions"][1]["value"] == ["me"]
    assert "MaintainerDeprecated" in res.stderr


def test_error_is_located_without_traceback(tmp_path):
    f = tmp_path / "Dockerfile"
    f.write_text("FROM a\nCOPY --frm=x a b\n")
    res = run(str(f))
    assert res.exit_code == 2
    assert res.stderr == (f"{f}:2:6: unknown flag: --frm for COPY (did you mean --from?)\n"
                          "COPY --frm=x a b\n     ^^^^^^^\n")
    assert "Traceback" not in res.output


def test_syntax_only_accepts_unknown_instructions(tmp_path):
    f = tmp_path / "Dockerfile"
    f.write_text("FROM a\nFOO bar\n")
    assert run(str(f)).exit_code == 2
    res = run(str(f), "--syntax-only")
    assert res.exit_code == 0 and json.loads(res.stdout)["instructions"][1]["value"] == [""]


def test_missing_file_and_bad_utf8(tmp_path):
    assert run(str(tmp_path / "nope")).exit_code == 2
    f = tmp_path / "Dockerfile"
    f.write_bytes(b"FROM a\nRUN echo \xff\n")
    res = run(str(f))
    assert res.exit_code == 2 and ":2:10: invalid UTF-8" in res.stderr
