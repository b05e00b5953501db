"""Run the real ``irctl`` CLI in a subprocess (``sys.executable -m irctl``, inheriting PYTHONPATH),
unpack and run the image it made, and write a build context: what the CLI, frontend, equivalence,
plugin and security tests share."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


def irctl_argv(*args) -> list[str]:
    """The argv that runs the real CLI, for tests that run it themselves (under a pty, a memory
    meter, ...) rather than through ``irctl``."""
    return [sys.executable, "-m", "irctl", *map(str, args)]


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.stderr.splitlines() if line.startswith("{")]


def irctl(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300) -> Result:
    proc = subprocess.run([sys.executable, "-m", "irctl", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout, stdin=subprocess.DEVNULL)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def run_image(layout: Path, tag: str, work: Path) -> str:
    """Unpack an OCI layout with umoci and run its default command with runc; returns stdout."""
    bundle = work / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)], check=True, capture_output=True)
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["terminal"] = False
    (bundle / "config.json").write_text(json.dumps(config))
    proc = subprocess.run(["runc", "run", "--bundle", str(bundle), f"irctl-test-{os.getpid()}-{bundle.stat().st_ino}"],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


FAST = "build inputs unchanged"  # what ``irctl build`` says when its no-op fast path answers


def build_ok(ctx: Path, env: dict, *extra: str) -> str:
    """Build ``ctx`` with plain progress, insist it succeeded, and return what it said on stderr."""
    r = irctl("build", "--progress", "plain", *extra, ctx, env=env)
    assert r.code == 0, r.stderr
    return r.stderr


def write(ctx: Path, files: dict[str, str]) -> Path:
    """Write `files` (relative name → text) under `ctx`, making the folders; returns `ctx`."""
    for name, text in files.items():
        p = ctx / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return ctx


def error_line(stderr: str) -> str:
    """The error report's first line: after a step's `#n ERROR` marker (the message follows, once)."""
    all_lines = stderr.splitlines()
    for i, line in enumerate(all_lines[:-1]):
        if re.match(r"#\d+ ERROR ", line):
            return all_lines[i + 1][:220]
    lines = [line for line in all_lines if "error" in line.lower()]
    return (lines[0] if lines else stderr.strip().splitlines()[-1])[:220]


def steps_ended(stderr: str) -> dict[str, str]:
    """Each step's description → how it ended (DONE / CACHED), from ``--progress plain``; a
    description that ended twice (two steps) says both (``DONE+DONE``)."""
    names: dict[str, str] = {}
    ends: dict[str, list[str]] = {}
    for line in stderr.splitlines():
        if m := re.match(r"#(\d+) (DONE|CACHED)\b", line):
            ends.setdefault(names[m[1]], []).append(m[2])
        elif m := re.match(r"#(\d+) (.*)", line):
            names.setdefault(m[1], m[2])  # the first line of a step is its description
    return {desc: "+".join(how) for desc, how in ends.items()}
