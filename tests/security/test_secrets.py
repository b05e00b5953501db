"""Secrets never leak: not into the cache store, the outputs, the IR, the progress output (every
mode) or error messages — also when a step prints them, fails, or the build is interrupted.

The scan reads every byte irctl wrote (sqlite files, blobs decompressed, tars unpacked) and looks
for the value, its stripped form and its base64 forms.  Figures are printed (``pytest -s``)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.security.conftest import Scan, mounts_under, needles, scan_bytes, scan_tree, write_ctx
from tests.support.cli import irctl_argv

pytestmark = pytest.mark.e2e

OK = """FROM busybox
RUN --mount=type=secret,id=filesec,required=true --mount=type=secret,id=envsec,env=MYSEC,required=true \\
    test -s /run/secrets/filesec && test -n "$MYSEC" && echo built > /ok
RUN --mount=type=secret,id=filesec,target=/etc/app.key --mount=type=cache,target=/c \\
    wc -c /etc/app.key > /size
"""

FAIL = """FROM busybox
RUN --mount=type=secret,id=filesec --mount=type=secret,id=envsec,env=MYSEC \\
    env; cat /run/secrets/filesec; cat /run/secrets/filesec >&2; echo "value=$MYSEC;" >&2; \\
    printf '%s' "$MYSEC"; echo; printf 'x%sy' "$(cat /run/secrets/filesec)"; echo; exit 3
"""

SLOW = """FROM busybox
RUN --mount=type=secret,id=filesec --mount=type=secret,id=envsec,env=MYSEC \\
    cat /run/secrets/filesec; echo "$MYSEC"; echo step-$((40+2))-running; sleep 30
"""


class Leaks:
    def __init__(self, tmp: Path, layout: Path):
        self.file_value = f"FileSecret-{uuid.uuid4().hex}"
        self.env_value = f"EnvSecret-{uuid.uuid4().hex}"
        self.values = needles(self.file_value.encode()) + needles(self.env_value.encode())
        self.tmp = tmp
        self.cache = tmp / "cache"
        self.secret_file = tmp / "secret.txt"
        self.secret_file.write_text(self.file_value + "\n")  # as `echo value > file` writes it
        self.layout = layout
        self.scan = Scan()
        self.written: list[Path] = []  # outputs to scan
        self.texts = 0
        # secret files and run bundles go to $XDG_RUNTIME_DIR: a private tmpfs dir of this test
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="irctl-security-", dir="/dev/shm"))

    def env(self) -> dict:
        return {**os.environ, "IRCTL_CACHE_DIR": str(self.cache), "THE_ENV_SECRET": self.env_value,
                "XDG_RUNTIME_DIR": str(self.runtime_dir)}

    def args(self, ctx: Path, *extra) -> list[str]:
        return irctl_argv("build", ctx, "--build-context", f"busybox=oci-layout://{self.layout}:latest",
                           "--secret", f"id=filesec,src={self.secret_file}", "--secret", "id=envsec,env=THE_ENV_SECRET",
                           *extra)

    def text(self, data: bytes | str, where: str) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.texts += 1
        scan_bytes(data, where, self.values, self.scan)

    def run(self, ctx: Path, *extra, tty: bool = False) -> subprocess.CompletedProcess:
        argv = self.args(ctx, *extra)
        if tty:  # a real pty: `script` runs the command on one and copies everything to its stdout
            cmd = " ".join(f"'{a}'" for a in argv)
            argv = ["script", "-qfec", cmd, "/dev/null"]
        p = subprocess.run(argv, capture_output=True, env=self.env(), timeout=180, stdin=subprocess.DEVNULL,
                           cwd=Path(__file__).resolve().parents[2])
        self.text(p.stdout, f"stdout of {' '.join(map(str, extra))}")
        self.text(p.stderr, f"stderr of {' '.join(map(str, extra))}")
        return p


def _interrupt(leaks: Leaks, ctx: Path, sig: int) -> bytes:
    """Start a build, wait until the secret-reading step runs, send ``sig`` to irctl, collect output."""
    log = leaks.tmp / f"interrupt-{sig}.log"
    with open(log, "wb") as out:
        p = subprocess.Popen(leaks.args(ctx, "--progress", "plain", "--no-cache"), stdout=out, stderr=subprocess.STDOUT,
                             env=leaks.env(), stdin=subprocess.DEVNULL, cwd=Path(__file__).resolve().parents[2])
        deadline = time.monotonic() + 60
        while b"step-42-running" not in log.read_bytes() and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.1)
        assert b"step-42-running" in log.read_bytes(), log.read_text()
        p.send_signal(sig)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            pytest.fail(f"irctl did not stop after signal {sig}")
    return log.read_bytes()




def test_secrets_never_leak(tmp_path: Path, busybox_layout: Path) -> None:
    leaks = Leaks(tmp_path, busybox_layout)
    ok = write_ctx(tmp_path / "ok", {"Dockerfile": OK})
    fail = write_ctx(tmp_path / "fail", {"Dockerfile": FAIL})
    slow = write_ctx(tmp_path / "slow", {"Dockerfile": SLOW})

    # every progress mode, a build that succeeds (re-run each time) and one that fails echoing the secrets
    for mode in ("plain", "json", "quiet", "tty", "auto"):
        tty = mode == "tty"
        r = leaks.run(ok, "--progress", mode, "--no-cache", tty=tty)
        assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
        r = leaks.run(fail, "--progress", mode, tty=tty)
        assert r.returncode != 0
        assert b"exit code 3" in r.stdout + r.stderr, (mode, r.stdout.decode()[-2000:], r.stderr.decode()[-2000:])
        if mode == "plain":  # the output is shown, redacted
            assert b"value=****;" in r.stderr, r.stderr.decode()[-3000:]

    # every kind of output, and the IR
    outs = tmp_path / "outs"
    outs.mkdir()
    r = leaks.run(ok, "--progress", "plain", "--ir-out", outs / "graph.ir",
                  "--output", f"type=oci,dest={outs / 'oci.tar'}", "--output", f"type=docker,dest={outs / 'docker.tar'}",
                  "--output", f"type=oci,tar=false,dest={outs / 'oci-dir'}", "--output", f"type=local,dest={outs / 'local'}",
                  "--output", f"type=tar,dest={outs / 'rootfs.tar'}", "-t", "leak:test")
    assert r.returncode == 0, r.stderr.decode()
    assert (outs / "local" / "ok").read_text() == "built\n"

    # interrupted mid-step (SIGINT, then SIGTERM); then a normal build on the same store cleans up
    for sig in (signal.SIGINT, signal.SIGTERM):
        leaks.text(_interrupt(leaks, slow, sig), f"output of the build interrupted by {sig.name}")
    r = leaks.run(ok, "--progress", "plain")
    assert r.returncode == 0, r.stderr.decode()

    leaks.scan.add(scan_tree(leaks.cache, leaks.values))
    leaks.scan.add(scan_tree(outs, leaks.values))
    leaks.scan.add(scan_tree(leaks.runtime_dir, leaks.values))
    leftovers = sorted(leaks.runtime_dir.rglob("*"))
    shutil.rmtree(leaks.runtime_dir, ignore_errors=True)
    print(f"\nsecrets scan: {leaks.scan.files} files + {leaks.texts} output streams, {leaks.scan.bytes} bytes, "
          f"{len(leaks.scan.hits)} hits; leftover runtime dirs: {[str(p) for p in leftovers]}")
    assert leaks.scan.hits == [], "\n".join(leaks.scan.hits)
    assert mounts_under(leaks.cache) == [], "a build left mounts behind"
    assert leftovers == [], "a build left runtime dirs behind (secret files / bundles)"
