"""A multi-platform build as an unprivileged user: binfmt_misc handlers are the kernel's, and one
registered with the F flag runs arm64 steps inside the user's namespace and containers too."""

from __future__ import annotations

import pytest

from tests.support.arm64 import multiplatform_dockerfile
from tests.support.cli import steps_ended

pytestmark = pytest.mark.e2e


def test_amd64_and_arm64_as_an_unprivileged_user(user_cli, multiarch_ref):
    work = user_cli.root / "multiplatform"
    (work / "ctx").mkdir(parents=True)
    (work / "ctx" / "Dockerfile").write_text(multiplatform_dockerfile(multiarch_ref))
    user_cli.chown(work)
    r = user_cli.run("build", "--progress", "plain", "--platform", "linux/amd64,linux/arm64", str(work / "ctx"))
    assert r.returncode == 0, r.stderr
    assert "rootless: user namespace as uid 0" in r.stderr
    steps = steps_ended(r.stderr)
    assert steps['[linux/arm64 stage-1 3/3] RUN echo "arm64 linux/arm64 $(uname -m)" > /arch.txt'] == "DONE"
    assert [s for s in steps.values() if s != "DONE"] == []  # each step once: the tools stage too

    out = work / "arm64"
    r = user_cli.run("build", "--progress", "plain", "--platform", "linux/arm64", "--output",
                     f"type=local,dest={out}", str(work / "ctx"))
    assert r.returncode == 0, r.stderr
    assert (out / "arch.txt").read_text() == "arm64 linux/arm64 aarch64\n"  # ran under QEMU, rootless
    assert (out / "build-arch.txt").read_text() == "x86_64\n"
