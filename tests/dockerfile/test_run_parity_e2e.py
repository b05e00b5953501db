"""BuildKit's run and copy semantics, end to end through ``irctl build`` on runc/overlayfs.

The expected trees and outputs were taken from the local BuildKit (dockerd 20.10, BuildKit v0.8)
on the same Dockerfiles, and checked against current BuildKit's code where the two differ (each
test says where).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import irctl

pytestmark = pytest.mark.e2e


def build(tmp_path: Path, base: Path, files: dict[str, str], *extra: str) -> tuple[Path, str]:
    """Build ``files`` (the Dockerfile among them) on the busybox layout; returns the exported root
    filesystem of the last stage and the build's stderr."""
    ctx = tmp_path / "ctx"
    for name, text in files.items():
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text(text)
    out = tmp_path / "out"
    r = irctl("build", ctx, "--progress", "plain", "--cache-dir", tmp_path / "cache",
              "--build-context", f"base=oci-layout://{base}:latest", *extra, "--output", f"type=local,dest={out}")
    assert r.code == 0, r.stderr
    return out, r.stderr


def test_mounts_without_target_land_on_the_working_directory(tmp_path, busybox_layout):
    dockerfile = """\
FROM base
WORKDIR /app
RUN --mount=type=bind,source=sub ls > /bind-source.txt
RUN --mount=type=bind ls > /bind-context.txt
RUN --mount=type=bind,from=base,source=/etc ls passwd > /bind-from.txt
RUN --mount=type=tmpfs sh -c 'touch t && grep " /app " /proc/mounts | cut -d" " -f3 > /tmpfs.txt'
RUN --mount=type=cache sh -c 'echo c >> runs && cat runs > /cache.txt'
RUN ls -A /app > /after.txt
"""
    out, _ = build(tmp_path, busybox_layout, {"Dockerfile": dockerfile, "a.txt": "A\n", "sub/s.txt": "S\n"})
    assert (out / "bind-source.txt").read_text() == "s.txt\n"
    assert (out / "bind-context.txt").read_text() == "Dockerfile\na.txt\nsub\n"
    assert (out / "bind-from.txt").read_text() == "passwd\n"
    assert (out / "tmpfs.txt").read_text() == "tmpfs\n"
    assert (out / "cache.txt").read_text() == "c\n"
    assert (out / "after.txt").read_text() == ""  # nothing the mounts held stays in /app


def test_copy_pattern_onto_a_file_destination_builds_and_warns(tmp_path, busybox_layout):
    """BuildKit (v0.8 and current ``docopy``) copies each match onto the destination in turn:
    ``/dest`` is the last file; a directory match before a file makes ``/dest`` a directory."""
    dockerfile = "FROM base\nCOPY *.txt /dest\nCOPY [cd]* /mixed\n"
    out, stderr = build(tmp_path, busybox_layout, {"Dockerfile": dockerfile, "a.txt": "A\n", "b.txt": "B\n",
                                                   "c/y": "Y\n", "d.txt": "D\n"})
    assert (out / "dest").read_text() == "D\n"
    assert sorted(p.name for p in (out / "mixed").iterdir()) == ["d.txt", "y"]
    warnings = [line for line in stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 2, stderr
    assert "COPY *.txt /dest" in warnings[0] and "matches 3 paths (a.txt, b.txt, d.txt)" in warnings[0]
    assert "ends up as d.txt" in warnings[0] and "end the destination with /" in warnings[0]
