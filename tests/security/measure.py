"""Running a command and measuring its peak memory alone (``os.wait4`` of a small launcher's
child), for the bounds tests."""

from __future__ import annotations

import os
import subprocess
import sys

MIB = 1 << 20


# Runs ARGV in a grandchild and prints its peak RSS: a process forked from pytest starts with
# pytest's RSS as its high-water mark (Linux keeps it across exec), a small launcher does not.
_LAUNCHER = """
import os, resource, sys
argv, limit, fd = sys.argv[3:], int(sys.argv[1]), int(sys.argv[2])
pid = os.fork()
if pid == 0:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    os.execv(argv[0], argv)
_, status, usage = os.wait4(pid, 0)
os.write(fd, str(usage.ru_maxrss * 1024).encode())
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(argv: list[str], *, stdin: bytes | None = None, timeout: float = 120,
                 env: dict | None = None) -> tuple[int, bytes, bytes, int]:
    """Run ``argv``; return (exit code, stdout, stderr, peak RSS in bytes) of that process alone.
    An address-space limit far above the one under test is a backstop: a regression fails the
    test, not the machine."""
    r, w = os.pipe()
    try:
        proc = subprocess.run([sys.executable, "-c", _LAUNCHER, str(4 << 30), str(w), *argv], input=stdin or b"",
                              capture_output=True, timeout=timeout, env=env, pass_fds=(w,))
    finally:
        os.close(w)
    with os.fdopen(r, "rb") as f:
        rss = int(f.read() or 0)
    return proc.returncode, proc.stdout, proc.stderr, rss
