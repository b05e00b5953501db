"""Hostile platforms: a graph's platform strings become image configs, index entries, per-platform
directory names (``type=local``/``type=tar`` of several images) and the emulation check's verdict.
None may hold what makes a path, a terminal sequence or a second reading; two images must never
be written to one place."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from ir import builder as b
from ir import ops
from ir.codec import dump_document
from tests.support.cli import irctl

pytestmark = pytest.mark.e2e


def image(text: str, platform: ops.Platform) -> b.State:
    return b.scratch().mkfile("/who", text.encode()).with_image(ops.ImageConfig(), platform=platform)


def solve(tmp: Path, roots: dict[str, b.State], *args: str):
    g = tmp / f"g-{uuid.uuid4().hex[:8]}.ir"
    g.write_bytes(dump_document(b.build_document(roots)))
    return irctl("solve", g, "--progress", "plain", "--cache-dir", tmp / "cache", *args, timeout=120)


@pytest.mark.parametrize("field,value", [
    ("os", "linux\0x"),  # a NUL in a directory name: a ValueError from mkdir, once a traceback
    ("architecture", "arm64/../../x"),  # a path, and `linux/arm64/../..` read as arm64 by the emulation check
    ("architecture", "\x1b]0;owned\x07"),  # a terminal sequence
    ("variant", ".."),
    ("architecture", "x" * 300),  # longer than a file name may be
])
def test_platform_fields_that_are_not_names_are_refused(tmp_path, field, value):
    bad = ops.Platform(**{field: value})
    r = solve(tmp_path, {"x@linux/amd64": image("a", ops.Platform()), "x@linux/arm64": image("b", bad)},
              "-o", f"type=local,dest={tmp_path / 'out'}")
    assert r.code == 2 and f"platform.{field}" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "\x1b" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_an_exec_platform_cannot_pass_for_the_host_through_a_slash(tmp_path):
    """``os='linux/amd64', architecture='s390x'`` joined reads ``linux/amd64/s390x``: the check saw amd64."""
    st = b.scratch().run(["/x"], platform=ops.Platform(os="linux/amd64", architecture="s390x"))
    r = solve(tmp_path, {"default": st})
    assert r.code == 2 and "platform.os" in r.stderr, r.stderr
