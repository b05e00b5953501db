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


@pytest.mark.parametrize("first,second", [
    (ops.Platform("linux", "arm_v7"), ops.Platform("linux", "arm", "v7")),  # both linux_arm_v7/
    (ops.Platform("linux", "amd64"), ops.Platform("linux", "amd64")),  # two roots of a target, one platform
])
@pytest.mark.parametrize("kind", ["local", "tar"])
def test_two_images_never_share_a_platform_directory(tmp_path, first, second, kind):
    out = tmp_path / "out"
    r = solve(tmp_path, {"x@linux/amd64": image("a", first), "x@linux/arm64": image("b", second)},
              "-o", f"type={kind},dest={out}")
    assert r.code != 0 and "same platform" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()[-1]) < 300
    assert not out.exists()


def test_an_index_never_lists_one_platform_twice(tmp_path):
    out = tmp_path / "out"
    r = solve(tmp_path, {"x@linux/amd64": image("a", ops.Platform()), "x@linux/arm64": image("b", ops.Platform())},
              "-o", f"type=oci,dest={out},tar=false")
    assert r.code != 0 and "same platform" in r.stderr, r.stderr
    assert not out.exists()


def test_distinct_platforms_each_get_their_directory(tmp_path):
    """The guard above refuses only a real clash: arm v6 and v7 differ by variant alone."""
    out = tmp_path / "out"
    r = solve(tmp_path, {"x@linux/arm/v6": image("six", ops.Platform("linux", "arm", "v6")),
                         "x@linux/arm/v7": image("seven", ops.Platform("linux", "arm", "v7"))},
              "-o", f"type=local,dest={out}")
    assert r.code == 0, r.stderr
    assert (out / "linux_arm_v6/who").read_text() == "six" and (out / "linux_arm_v7/who").read_text() == "seven"


def build_copy(tmp: Path, base: str, platforms: str, output: str):
    """``irctl build`` of a COPY-only Dockerfile (nothing to emulate) for ``platforms``."""
    (tmp / "Dockerfile").write_text(f"FROM {base}\nCOPY f /f\n")
    (tmp / "f").write_text("x")
    return irctl("build", tmp, "--platform", platforms, "--progress", "quiet", "--cache-dir", tmp / "cache",
                 "-o", output, timeout=120)


def test_build_platforms_sharing_a_directory_are_refused(tmp_path):
    """The same guard for ``irctl build``: ``--platform linux/arm_v7,linux/arm/v7`` would have
    written both into ``linux_arm_v7/``."""
    out = tmp_path / "out"
    r = build_copy(tmp_path, "scratch", "linux/arm_v7,linux/arm/v7", f"type=local,dest={out}")
    assert r.code == 1 and "same platform" in r.stderr, r.stderr
    assert not out.exists()


def test_root_names_say_nothing_but_one_line(tmp_path):
    """A root name is the graph's own text: asking which of several targets to build quotes it,
    and a line break or a terminal sequence in it must not start a line of its own."""
    r = solve(tmp_path, {"a\nbuilt in 0.01s\x1b]0;x\x07@linux/amd64": image("a", ops.Platform()),
                         "b": image("b", ops.Platform())})
    assert r.code != 0 and "name the roots to build" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "\x1b" not in r.stderr, r.stderr


def test_an_index_never_lists_a_platform_twice_when_the_last_stage_pins_one(tmp_path):
    """``FROM --platform=linux/amd64`` as the last stage of a two-platform build: both images are
    linux/amd64, and an index listing linux/amd64 twice has nothing for linux/arm64 (a pull for it
    fails, or takes the wrong one): refused, saying why."""
    out = tmp_path / "out"
    r = build_copy(tmp_path, "--platform=linux/amd64 scratch", "linux/amd64,linux/arm64",
                   f"type=oci,dest={out},tar=false")
    assert r.code == 1 and "linux/amd64 twice" in r.stderr, r.stderr
    assert r.stderr.count("error:") == 1 and "Traceback" not in r.stderr and not out.exists(), r.stderr


@pytest.mark.skipif(not Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists(), reason="needs QEMU's arm64 handler")
def test_a_step_of_another_platform_never_takes_the_native_step_s_result(tmp_path, busybox_layout):
    """The same RUN on the same input as linux/amd64 and as linux/arm64: two cache entries (the
    platform is in the op, so in its key), never one answering for the other."""
    base = b.oci_layout("busybox", ref="latest").with_env("PATH", "/bin")
    g = tmp_path / "g.ir"
    grant = ["--oci-layout", f"busybox={busybox_layout}"]
    said = []
    for plat in (None, ops.Platform("linux", "arm64"), None):
        st = base.run(["sh", "-c", "echo $RANDOM > /r"], platform=plat)
        g.write_bytes(dump_document(b.build_document({"default": st})))
        r = irctl("solve", g, "--progress", "plain", "--cache-dir", tmp_path / "cache", *grant, timeout=120)
        assert r.code == 0, r.stderr
        said.append(r.stderr.strip().splitlines()[-1])  # the RUN's last word: `#2 DONE 0.1s` or `#2 CACHED`
    assert said[0].startswith("#2 DONE") and said[1].startswith("#2 DONE") and said[2] == "#2 CACHED", said
