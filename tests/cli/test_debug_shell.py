"""``irctl build --on-error=shell`` (and ``irctl debug build``): a shell in the failed RUN step's
container, on a real pseudo-terminal, with runc and with crun (skipped where crun cannot run containers,
as on hybrid-cgroup hosts).

The step writes a file, a cache entry, and fails with exit code 3; the shell must see the file, the
step's working dir, environment, user, cache, bind and tmpfs mounts and network mode, and neither its
secrets (file and env) nor its ssh agent unless asked (``--debug-secrets``).  The shell's own exit status is not the build's: the build fails as it would
have without the shell (same message, same status), and nothing of the step is cached.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.cli import irctl, irctl_argv, write
from tests.support.debug_build import DOCKERFILE, SEEN, TOKEN, probe, probe_and_exit, step_error
from tests.support.terminal import TerminalSession

pytestmark = pytest.mark.e2e


def runtime_or_skip(name: str) -> str:
    """``name`` if it runs containers on this host (crun refuses hybrid cgroup v1+v2 hosts as root)."""
    from backend.runtime.finder import _crun_works

    path = shutil.which(name)
    if path is None:
        pytest.skip(f"no {name} here")
    if name == "crun" and not _crun_works(path):
        pytest.skip("crun cannot run containers on this host (its probe failed: hybrid cgroups?)")
    return name


@pytest.fixture
def agent():
    """A listening socket standing in for an ssh agent (the build's proxy connects only when used)."""
    where = Path(tempfile.mkdtemp(prefix="agent-", dir="/tmp"))  # short: a socket path has 108 bytes
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(where / "agent.sock"))
    sock.listen()
    yield where / "agent.sock"
    sock.close()
    shutil.rmtree(where)


@pytest.fixture
def failing(tmp_path, busybox_layout, agent) -> tuple[Path, list[str]]:
    """The failing build's context and its options (a secret and an ssh agent granted)."""
    ctx = write(tmp_path / "ctx", {"Dockerfile": DOCKERFILE})
    (tmp_path / "tok").write_text(TOKEN)
    return ctx, ["--progress", "plain", "--build-context", f"base=oci-layout://{busybox_layout}",
                 "--secret", f"id=tok,src={tmp_path / 'tok'}", "--ssh", f"default={agent}"]


@pytest.mark.parametrize("runtime", ["runc", "crun"])
def test_shell_in_the_failed_step_sees_its_state_and_the_build_still_fails(tmp_path, failing, runtime):
    runtime = runtime_or_skip(runtime)
    ctx, args = failing
    env = {**os.environ, "IRCTL_CACHE_DIR": str(tmp_path / "cache"), "IRCTL_RUNTIME": runtime}
    seen, status, text = probe_and_exit(irctl_argv("build", *args, "--on-error=shell", ctx), "exit 7", env=env)
    assert seen == SEEN, text
    assert "its secrets and ssh agents withheld" in text
    assert "debug shell exited (status 7)" in text
    # the same failure as without the shell: same status, same report; the step runs again
    plain = irctl("build", *args, ctx, env={"IRCTL_CACHE_DIR": str(tmp_path / "cache"), "IRCTL_RUNTIME": runtime})
    assert status == plain.code == 1
    assert "exit code 3" in step_error(plain.stderr)
    assert step_error(text) == step_error(plain.stderr)
    n = re.search(r"^#(\d+) \[4/4\] RUN", plain.stderr, re.M).group(1)  # the step ran again: nothing was cached
    assert f"#{n} ERROR" in plain.stderr and f"#{n} CACHED" not in plain.stderr
    assert os.listdir(tmp_path / "cache" / "tmp") == []  # the failed step's rootfs went with the build


def test_debug_build_with_secrets_gives_the_shell_the_secrets_and_the_agent(tmp_path, failing):
    """``irctl debug --invoke CMD build --debug-secrets …``, buildx's spelling."""
    ctx, args = failing
    env = {**os.environ, "IRCTL_CACHE_DIR": str(tmp_path / "cache")}
    seen, status, text = probe_and_exit(irctl_argv("debug", "--invoke", "/bin/sh -i", "build", *args,
                                                   "--debug-secrets", ctx), "exit", env=env)
    assert seen == {**SEEN, "SECRET": TOKEN, "SECRET_ENV": TOKEN, "AGENT": "bound"}, text
    assert "withheld" not in text
    assert status == 1 and "exit code 3" in text


def test_without_a_terminal_it_refuses_at_once(tmp_path, failing):
    ctx, args = failing
    t0 = time.monotonic()
    r = irctl("build", *args, "--on-error=shell", ctx, env={"IRCTL_CACHE_DIR": str(tmp_path / "cache")})
    assert r.code == 1
    assert r.stderr.splitlines() == ["error: --on-error=shell needs a terminal on stdin for the shell (run it "
                                     "from one, or leave the option out)"]
    assert time.monotonic() - t0 < 10
    assert not (tmp_path / "cache").exists()  # refused before anything was built


def test_a_shell_that_cannot_start_leaves_the_steps_error(tmp_path, failing):
    ctx, args = failing
    env = {**os.environ, "IRCTL_CACHE_DIR": str(tmp_path / "cache")}
    term = TerminalSession(irctl_argv("build", *args, "--on-error=shell", "--debug-shell", "/bin/no-such-shell", ctx),
                           env=env)
    try:
        status = term.wait()
    finally:
        term.close()
    assert "the debug shell did not start" in term.text and "no-such-shell" in term.text
    assert status == 1 and "exit code 3" in step_error(term.text)


def test_sigterm_while_the_shell_is_open_ends_it_and_the_build(tmp_path, failing):
    """The build being torn down (SIGTERM, as Ctrl-C outside the shell) kills the shell's container
    rather than waiting for someone to type ``exit``."""
    ctx, args = failing
    env = {**os.environ, "IRCTL_CACHE_DIR": str(tmp_path / "cache")}
    term = TerminalSession(irctl_argv("build", *args, "--on-error=shell", ctx), env=env)
    try:
        assert probe(term)["FILE"] == "written-by-step"
        t0 = time.monotonic()
        os.kill(term.pid, signal.SIGTERM)
        status = term.wait(timeout=30)
    finally:
        term.close()
    assert status == 128 + signal.SIGTERM
    assert time.monotonic() - t0 < 10
    assert "debug shell exited" not in term.text
    assert os.listdir(tmp_path / "cache" / "tmp") == []


def test_another_step_failing_while_the_shell_is_open_cancels_the_build_and_the_shell(tmp_path, busybox_layout):
    """One shell per build: stage b fails once the shell of stage a is open (it waits for a file the
    shell makes in the cache mount both share); b gets no shell, the build is cancelled, a's shell killed."""
    ctx = write(tmp_path / "ctx", {"Dockerfile": """\
FROM base AS a
RUN --mount=type=cache,target=/sync,id=sync echo a > /a && exit 4
FROM base AS b
RUN --mount=type=cache,target=/sync,id=sync until [ -e /sync/open ]; do sleep 0.05; done; exit 5
FROM base
COPY --from=a /a /a
COPY --from=b /etc/hostname /b
"""})
    env = {**os.environ, "IRCTL_CACHE_DIR": str(tmp_path / "cache")}
    term = TerminalSession(irctl_argv("build", "--progress", "plain", "--build-context",
                                      f"base=oci-layout://{busybox_layout}", "--on-error=shell", ctx), env=env)
    try:
        term.expect("exit it to end the build")
        term.send('touch /sync/open && echo "OPEN$((1+1))"')
        term.expect("OPEN2")
        status = term.wait(timeout=30)
    finally:
        term.close()
    assert "debug shell killed: the build was cancelled" in term.text
    assert term.text.count("exit it to end the build") == 1
    assert status == 1 and "exit code 5" in term.text and "exit code 4" in term.text
    assert os.listdir(tmp_path / "cache" / "tmp") == []


def test_a_step_whose_process_cannot_start_gets_the_shell_too(tmp_path, busybox_layout):
    """``RUN ["/no/such/tool"]``: the runtime cannot start it; the shell opens on what the step would
    have run in, and the build reports the runtime's error as without the shell."""
    ctx = write(tmp_path / "ctx", {"Dockerfile": 'FROM base\nRUN echo before > /before\nRUN ["/no/such/tool"]\n'})
    env = {**os.environ, "IRCTL_CACHE_DIR": str(tmp_path / "cache")}
    args = ["--progress", "plain", "--build-context", f"base=oci-layout://{busybox_layout}", ctx]
    term = TerminalSession(irctl_argv("build", "--on-error=shell", *args), env=env)
    try:
        term.expect("exit it to end the build")
        term.send('echo "BEFORE=$(cat /before)-$((1+1))"')
        assert term.expect("-2").endswith("BEFORE=before")
        term.send("exit")
        status = term.wait()
    finally:
        term.close()
    assert "the step: [3/3] RUN [\"/no/such/tool\"], could not start" in term.text
    plain = irctl("build", *args, env={"IRCTL_CACHE_DIR": str(tmp_path / "cache")})
    assert status == plain.code == 1
    report = plain.stderr[plain.stderr.index('[3/3] RUN ["/no/such/tool"]: '):]
    assert "could not start the container" in report and report.strip() in term.text.replace("\r", "")
