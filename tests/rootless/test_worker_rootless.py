"""`irctl worker` run by an unprivileged user: it enters the rootless user namespace as `irctl build`
does, and runs a leased step there."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest

from tests.rootless.conftest import USER, UserCLI
from tests.support.buildgrid import READY, stop_worker
from tests.support.farmsteps import busybox_layer, client, exec_step, execute, upload_base

pytestmark = pytest.mark.e2e


def test_a_rootless_worker_runs_a_step_in_its_user_namespace(buildgrid, user_cli: UserCLI, tmp_path):
    base = upload_base(buildgrid.url, busybox_layer(tmp_path))
    cache = user_cli.home / "worker-cache"
    proc = subprocess.Popen(["runuser", "-u", USER, "--", *user_cli.env(), user_cli.python, "-m", "irctl", "worker",
                             "--server", buildgrid.url, "--name", "rootless", "--cache-dir", str(cache)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=user_cli.root)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(line.rstrip("\n") for line in proc.stdout), daemon=True).start()
    proc.lines = lines  # type: ignore[attr-defined]
    try:
        deadline = time.monotonic() + 60
        while READY.format(name="rootless") not in lines:
            assert proc.poll() is None and time.monotonic() < deadline, "\n".join(lines)
            time.sleep(0.1)
        assert any(line.startswith("rootless: user namespace as uid 0") for line in lines)
        with client(buildgrid.url) as remote:
            # the session server's other workers are idle too: run until this one took a step
            for _ in range(10):
                response = execute(remote, exec_step(base, "id -u > /uid; echo in $(cat /uid)"))
                if response.result.execution_metadata.worker == "rootless":
                    break
        assert response.result.execution_metadata.worker == "rootless", "\n".join(lines)
        assert response.result.stdout_raw == b"in 0\n"
        # SIGTERM to the worker, not to runuser (which would kill it and report the signal)
        worker = int(subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()[0])
        os.kill(worker, signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, "\n".join(lines)
        assert lines[-1] == "irctl worker: rootless stopped"
    finally:
        stop_worker(proc)
    assert (cache / "layers").is_dir() and cache.stat().st_uid == user_cli.pw.pw_uid
