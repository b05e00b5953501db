"""Run one-RUN Dockerfiles through the real CLI as root and as the rootless user, and read what the step
wrote (``--output type=local``): the harness of test_sandbox.py and test_network.py."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.cli import Result, irctl
from tests.security.conftest import write_ctx


@dataclass
class Builder:
    mode: str  # "root" | "rootless"
    work: Path
    layout: Path
    cli: object | None = None  # tests.rootless.conftest.UserCLI when rootless
    n: int = 0

    def build(self, dockerfile: str, *args: str, files: dict[str, str] | None = None, timeout: float = 300):
        """Build ``dockerfile`` (FROM busybox) with ``args``; returns (result, the exported dir)."""
        self.n += 1
        ctx = write_ctx(self.work / f"ctx{self.n}", {"Dockerfile": dockerfile, **(files or {})})
        out = self.work / f"out{self.n}"
        argv = ["build", str(ctx), "--progress", "plain", "--build-context",
                f"busybox=oci-layout://{self.layout}:latest", "--output", f"type=local,dest={out}", *args]
        if self.cli is None:
            r = irctl(*argv, env={"IRCTL_CACHE_DIR": str(self.work / "cache")}, timeout=timeout)
        else:
            self.cli.chown(self.work)
            u = self.cli.run(*argv, timeout=timeout)
            r = Result(u.returncode, u.stdout, u.stderr)
        return r, out


@pytest.fixture(params=["root", "rootless"])
def builder(request, busybox_layout, tmp_path):
    if request.param == "root":
        yield Builder("root", tmp_path, busybox_layout)
        return
    from tests.rootless.conftest import rootless_skip_reason

    reason = rootless_skip_reason()
    if reason:
        pytest.skip(reason)
    user_cli = request.getfixturevalue("user_cli")
    work = Path(tempfile.mkdtemp(prefix="sandbox.", dir=user_cli.root))
    os.chmod(work, 0o755)
    layout = work / "busybox"
    shutil.copytree(busybox_layout, layout)
    try:
        yield Builder("rootless", work, layout, user_cli)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(user_cli.home / ".cache", ignore_errors=True)
