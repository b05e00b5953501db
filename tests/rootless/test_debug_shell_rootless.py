"""``--on-error=shell`` as an unprivileged user: the shell opens in the failed step's container inside
irctl's user namespace, on the user's terminal, with runc and with crun (which needs no cgroups
there), and sees what the step left (tests/cli/test_debug_shell.py has the rootful cases)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.rootless.conftest import USER, UserCLI
from tests.support.baseimage import make_busybox_layout
from tests.support.debug_build import DOCKERFILE, SEEN, TOKEN, probe_and_exit, step_error

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("runtime", ["runc", "crun"])
def test_rootless_shell_in_the_failed_step(user_cli: UserCLI, runtime):
    if shutil.which(runtime) is None:
        pytest.skip(f"no {runtime} here")
    work = Path(tempfile.mkdtemp(prefix="debug-", dir=user_cli.root))
    (work / "ctx").mkdir()
    (work / "ctx" / "Dockerfile").write_text(DOCKERFILE)
    (work / "tok").write_text(TOKEN)
    base = make_busybox_layout(work / "base")
    user_cli.chown(work)
    argv = ["runuser", "-u", USER, "--", *user_cli.env({"IRCTL_RUNTIME": runtime}), user_cli.python, "-m", "irctl",
            "build", "--progress", "plain", "--build-context", f"base=oci-layout://{base}",
            "--secret", f"id=tok,src={work / 'tok'}", "--on-error=shell", str(work / "ctx")]
    try:
        seen, status, text = probe_and_exit(argv, "exit 5", cwd=str(work))
    except AssertionError as e:
        if f"{runtime} could not start the container" in str(e):  # crun on hybrid cgroups, even here
            pytest.skip(f"{runtime} cannot run containers on this host as {USER}")
        raise
    assert "rootless: user namespace as uid 0" in text
    assert seen == SEEN, text
    assert "debug shell exited (status 5)" in text
    assert status == 1 and "exit code 3" in step_error(text)
    assert list((user_cli.home / ".cache" / "irctl" / "tmp").iterdir()) == []
