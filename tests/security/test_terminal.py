"""Terminal safety: control sequences in step output and in IR metadata (descriptions, groups,
root names, source file names) and in error messages never reach the terminal raw — in the tty
view (a real pty, through ``script``), plain and quiet progress, ``irctl dump``/``validate`` and
error messages they are shown escaped (``\\x1b``); ``--progress=json`` escapes them as JSON does.
Rich markup in a description (``[/red]``) is shown as text, not interpreted (it used to crash)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.security.conftest import write_ctx
from tests.support.cli import irctl_argv

# What a hostile step or graph would send: a window title (OSC), clear screen and home (CSI),
# an 8-bit CSI (C1, U+009B), a carriage return and a backspace to overwrite, a forged progress line.
TITLE = "\x1b]0;PWNED-TITLE\x07"
CLEAR = "\x1b[2J\x1b[H"
C1_CSI = "\u009b2J"
FORGED = "\r#9 DONE 0.0s\x08\x08"
RAW = [TITLE, CLEAR, "\x1b]", "\x1b[2J", "\u009b", "\x07", "\r#9 DONE", "\x08"]


def _printf(text: str) -> str:
    raw = text.encode("utf-8").decode("latin-1")
    return "".join(f"\\{ord(c):03o}" if ord(c) < 0x20 or ord(c) > 0x7e else c for c in raw)


STEP = f"printf '{_printf(TITLE + CLEAR + C1_CSI + FORGED)}-from-step\\n'"
DOCKERFILE = f"""FROM busybox
RUN {STEP}; sleep 1
RUN echo "[/red] markup [bold]" ; {STEP} >&2; exit 4
"""


def _run(argv: list[str], tmp: Path, tty: bool = False) -> str:
    env = {**os.environ, "IRCTL_CACHE_DIR": str(tmp / "cache"), "COLUMNS": "200"}
    if tty:  # a real pty: `script` runs the command on one and copies everything it shows to stdout
        argv = ["script", "-qfec", " ".join(map(shlex.quote, argv)), "/dev/null"]
    p = subprocess.run(argv, capture_output=True, env=env, timeout=300, stdin=subprocess.DEVNULL)
    return (p.stdout + p.stderr).decode("utf-8", "replace")


def _assert_safe(out: str, mode: str) -> None:
    for raw in RAW:
        assert raw not in out, (mode, raw, out[-3000:])
    # the ESC sequences rich emits itself are the only ones (tty): colours, cursor, line erase
    if mode == "tty":
        import re

        for seq in re.findall(r"\x1b\[[0-9;?]*[A-Za-z]", out):
            assert seq[-1] in "mKAhlGJ" and seq != "\x1b[2J", seq


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["tty", "plain", "quiet", "auto"])
def test_step_output_and_dockerfile_text_reach_the_terminal_escaped(mode: str, tmp_path: Path,
                                                                      busybox_layout: Path) -> None:
    # the Dockerfile's own RUN line carries raw escapes too: it becomes the step's description
    ctx = write_ctx(tmp_path / "ctx", {"Dockerfile": DOCKERFILE.replace("exit 4", f"exit 4 # {TITLE}{CLEAR}")})
    out = _run(irctl_argv("build", ctx, "--build-context", f"busybox=oci-layout://{busybox_layout}:latest",
                      "--progress", mode, "--no-cache"), tmp_path, tty=mode in ("tty", "auto"))
    assert "exit code 4" in out, out[-3000:]
    _assert_safe(out, "tty" if mode in ("tty", "auto") else mode)
    assert "\\x1b]0;PWNED-TITLE\\x07" in out, out[-3000:]  # shown, escaped (the error's output tail)
    assert "[/red] markup [bold]" in out


@pytest.mark.e2e
def test_json_progress_escapes_as_json(tmp_path: Path, busybox_layout: Path) -> None:
    ctx = write_ctx(tmp_path / "ctx", {"Dockerfile": DOCKERFILE})
    out = _run(irctl_argv("build", ctx, "--build-context", f"busybox=oci-layout://{busybox_layout}:latest",
                      "--progress", "json", "--no-cache"), tmp_path)
    for raw in ("\x1b", "\x07", "\r", "\x08"):
        assert raw not in out
    logs = [json.loads(line)["text"] for line in out.splitlines() if line.startswith("{") and '"log"' in line]
    assert any(TITLE in text for text in logs)  # the JSON reader gets the exact text back


def _hostile_graph(tmp: Path) -> Path:
    from ir import builder as b
    from ir import ops
    from ir.codec import dump_document

    st = b.image("busybox", digest="sha256:" + "ab" * 32)
    st = st.with_meta(f"step {TITLE}{CLEAR}", f"group{FORGED}", [ops.Location(file=0, line=1, column=1)])
    st = st.run(["sh", "-c", "exit 1"])
    doc = b.build_document({f"root{C1_CSI}": st, "default": st},
                           sources=[ops.SourceFile(name=f"Dockerfile{TITLE}", data=b"RUN x\n")])
    path = tmp / "hostile.irg"
    path.write_bytes(dump_document(doc))
    return path


@pytest.mark.parametrize("command", ["dump", "dump --format dot", "validate", "dump --diff"])
def test_ir_metadata_is_escaped_by_dump_and_validate(command: str, tmp_path: Path) -> None:
    path = _hostile_graph(tmp_path)
    args = command.split() + [path] + ([tmp_path / "other.irg"] if "--diff" in command else [])
    if "--diff" in command:
        from ir import builder as b
        from ir.codec import dump_document

        (tmp_path / "other.irg").write_bytes(dump_document(b.build_document({"default": b.image("x")})))
    out = _run(irctl_argv(*args), tmp_path, tty=True)
    _assert_safe(out, "plain")
    assert "\\x1b" in out or "\\x9b" in out, out


def test_error_messages_are_escaped(tmp_path: Path) -> None:
    """A file name and a Dockerfile line quoted in an error; an IR error naming a hostile key."""
    ctx = write_ctx(tmp_path / "ctx", {"Dockerfile": f"FROM busybox\nFROBNICATE {TITLE}{CLEAR}\n"})
    out = _run(irctl_argv("build", ctx, "--progress", "plain"), tmp_path, tty=True)
    assert "FROBNICATE" in out
    _assert_safe(out, "plain")
    hostile_name = tmp_path / f"graph{TITLE}.irg"
    hostile_name.write_bytes(b"not an IR file")
    out = _run(irctl_argv("validate", hostile_name), tmp_path, tty=True)
    assert "not an irctl IR file" in out
    _assert_safe(out, "plain")


def test_printable_keeps_tabs_and_text() -> None:
    from irctl.terminal import printable

    assert printable("a\tb ünï [x]") == "a\tb ünï [x]"
    assert printable("a\nb") == "a\\x0ab" and printable("a\nb", newlines=True) == "a\nb"
    assert printable(TITLE + C1_CSI) == "\\x1b]0;PWNED-TITLE\\x07\\x9b2J"
