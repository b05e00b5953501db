"""Leaks through side doors: a secret value reaching the output of a step that does not mount it
(through a cache mount, a file in a layer, a later build), and a secret left in a layer or a cache
mount, which is reported (step and path, never the value).  Build files and ignore files are
tested in ``test_build_files.py``; the terminal in ``test_terminal.py``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.security.conftest import needles, write_ctx

pytestmark = pytest.mark.e2e

WRITE = """FROM busybox
RUN --mount=type=secret,id=filesec --mount=type=secret,id=envsec,env=MYSEC --mount=type=cache,target=/c \\
    cat /run/secrets/filesec > /c/leak-file; echo "$MYSEC" > /c/leak-env; \\
    mkdir -p /deep/er; cp /run/secrets/filesec /deep/er/in-layer; \\
    { head -c 100000 /dev/zero | tr '\\0' z; cat /run/secrets/filesec; } > /c/big-with-secret-at-100k; \\
    echo harmless > /c/harmless
RUN --mount=type=cache,target=/c cat /c/leak-file /c/leak-env; echo "inline:$(cat /c/leak-env):end"; \\
    head -c 65530 /dev/zero | tr '\\0' x; cat /c/leak-file; echo "$(cat /c/leak-env)" >&2
RUN --mount=type=cache,target=/c echo "fails with $(cat /c/leak-env)"; cat /c/leak-file; exit 5
"""

LATER = """FROM busybox
RUN --mount=type=cache,target=/c cat /c/leak-file /c/leak-env; ls /c
"""


class Build:
    def __init__(self, tmp: Path, layout: Path) -> None:
        self.file_value = f"FileSecret-{uuid.uuid4().hex}"
        self.env_value = f"EnvSecret-{uuid.uuid4().hex}"
        self.tmp = tmp
        self.layout = layout
        (tmp / "secret.txt").write_text(self.file_value + "\n")
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="irctl-leaks-", dir="/dev/shm"))

    def run(self, ctx: Path, *extra: str, secrets: bool = True) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "irctl", "build", str(ctx),
                "--build-context", f"busybox=oci-layout://{self.layout}:latest", *extra]
        if secrets:
            argv += ["--secret", f"id=filesec,src={self.tmp / 'secret.txt'}", "--secret", "id=envsec,env=THE_ENV"]
        env = {**os.environ, "IRCTL_CACHE_DIR": str(self.tmp / "cache"), "THE_ENV": self.env_value,
               "XDG_RUNTIME_DIR": str(self.runtime_dir)}
        return subprocess.run(argv, capture_output=True, env=env, timeout=300, stdin=subprocess.DEVNULL)

    def hits(self, data: bytes) -> list[bytes]:
        values = needles(self.file_value.encode()) + needles(self.env_value.encode())
        return [v for v in values if v in data]


@pytest.fixture
def build(tmp_path: Path, busybox_layout: Path):
    b = Build(tmp_path, busybox_layout)
    yield b
    subprocess.run(["rm", "-rf", str(b.runtime_dir)])


@pytest.mark.parametrize("mode", ["plain", "json", "quiet"])
def test_every_secret_is_redacted_from_every_step(build: Build, mode: str) -> None:
    """Steps 2 and 3 do not mount a secret but read both values from a cache mount step 1 wrote:
    stdout, stderr, a line cut by a 64 KiB pipe read, the error message — all masked."""
    ctx = write_ctx(build.tmp / "ctx", {"Dockerfile": WRITE})
    r = build.run(ctx, "--progress", mode, "--no-cache")
    assert r.returncode != 0, r.stderr.decode()[-2000:]
    out = r.stdout + r.stderr
    assert b"exit code 5" in out
    assert build.hits(out) == [], out.decode()[-3000:]
    if mode == "plain":
        assert b"inline:****:end" in r.stderr
        assert b"fails with ****" in r.stderr


def test_a_secret_written_to_a_layer_or_cache_is_reported(build: Build) -> None:
    ctx = write_ctx(build.tmp / "ctx", {"Dockerfile": WRITE.split("RUN --mount=type=cache,target=/c cat")[0]})
    r = build.run(ctx, "--progress", "json", "--no-cache")
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    warnings = [json.loads(line)["text"] for line in r.stderr.decode().splitlines()
                if line.startswith("{") and "secret value" in line]
    text = "\n".join(warnings)
    assert "to /deep/er/in-layer " in text, text
    assert "cache mount /c: /c/leak-file " in text and "cache mount /c: /c/leak-env " in text, text
    assert "/c/big-with-secret-at-100k" in text, text
    assert ": /c/harmless " not in text
    assert build.hits(r.stdout + r.stderr) == []
    assert all("[2/2] RUN" in w or "RUN --mount" in w for w in warnings), warnings

    # an unchanged cache file is not reported again by a step that does not touch it
    ctx2 = write_ctx(build.tmp / "ctx2", {"Dockerfile": "FROM busybox\nRUN --mount=type=cache,target=/c ls /c\n"})
    r = build.run(ctx2, "--progress", "json", "--no-cache")
    assert r.returncode == 0 and b"secret value" not in r.stderr, r.stderr.decode()[-2000:]


def test_a_later_build_with_the_secrets_masks_them_in_the_cache(build: Build) -> None:
    """A later build that is given the same secrets (but mounts none) masks what the cache holds;
    one not given them cannot know the values (see SECURITY.md: the cache is the user's)."""
    ctx = write_ctx(build.tmp / "ctx", {"Dockerfile": WRITE.split("RUN --mount=type=cache,target=/c cat")[0]})
    assert build.run(ctx, "--progress", "plain").returncode == 0
    later = write_ctx(build.tmp / "later", {"Dockerfile": LATER})
    r = build.run(later, "--progress", "plain", "--no-cache")
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert re.search(rb"^#2 \d+\.\d{3} \*\*\*\*$", r.stderr, re.M) and build.hits(r.stdout + r.stderr) == [], r.stderr.decode()[-2000:]


def test_no_secrets_no_scan_and_no_warning(build: Build) -> None:
    ctx = write_ctx(build.tmp / "ctx", {"Dockerfile": "FROM busybox\nRUN --mount=type=cache,target=/c echo x > /c/f\n"})
    r = build.run(ctx, "--progress", "plain", "--no-cache", secrets=False)
    assert r.returncode == 0 and b"warning" not in r.stderr
