"""Run an independent tool (skopeo, umoci, tar) on what irctl wrote: the tests check irctl's output
with software that does not share its code."""

from __future__ import annotations

import subprocess


def run(*cmd: str) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stderr}"
    return r.stdout
