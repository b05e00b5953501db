"""Nothing lost: builds killed with SIGKILL (the whole process group) at random points, many times,
on one cache store.  After every kill the next build must succeed and produce exactly the image a
clean build produces (same digest, SOURCE_DATE_EPOCH set), and leave no mounts, no runc containers
and no work dirs behind.  What SIGKILL itself leaves (nothing can clean up in-process) is counted
and printed: the next build must reap it (``CacheStore.clean_stale``).

``IRCTL_SECURITY_KILLS`` sets the number of kills (default 30, about a minute), ``IRCTL_SECURITY_SEED`` the seed."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.security.conftest import mounts_under, write_ctx

pytestmark = pytest.mark.e2e

DOCKERFILE = """FROM busybox
COPY files/ /files/
RUN --mount=type=cache,target=/c,sharing=locked i=0; while [ $i -lt 100 ]; do echo $i >> /c/log; i=$((i+1)); done; \\
    find /files -type f | sort | xargs cat | md5sum > /sum
RUN echo two > /two && sleep 0.5
COPY more/ /more/
RUN cat /sum /two > /final && ls /more | wc -l >> /final
"""
ROOT = Path(__file__).resolve().parents[2]


class Builds:
    def __init__(self, tmp: Path, layout: Path):
        self.tmp = tmp
        self.layout = layout
        files = {f"files/d{i % 7}/f{i}.txt": f"file {i}\n" for i in range(400)}
        files.update({f"more/m{i}": f"m {i}\n" for i in range(60)})
        self.ctx = write_ctx(tmp / "ctx", {"Dockerfile": DOCKERFILE, **files})
        self.cache = tmp / "cache"
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="irctl-kills-", dir="/dev/shm"))

    def argv(self, out: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "irctl", "build", str(self.ctx), "--progress", "plain",
                "--build-context", f"busybox=oci-layout://{self.layout}:latest",
                "--output", f"type=oci,dest={out}", *extra]

    def env(self, cache: Path | None = None) -> dict:
        return {**os.environ, "IRCTL_CACHE_DIR": str(cache or self.cache), "SOURCE_DATE_EPOCH": "0",
                "XDG_RUNTIME_DIR": str(self.runtime_dir)}

    def build(self, out: Path, *extra: str, cache: Path | None = None) -> tuple[str, str]:
        p = subprocess.run(self.argv(out, *extra), capture_output=True, text=True, env=self.env(cache), cwd=ROOT,
                           timeout=180, stdin=subprocess.DEVNULL)
        assert p.returncode == 0, p.stderr
        m = re.search(r"exported OCI image (sha256:[0-9a-f]{64})", p.stderr)
        assert m, p.stderr
        return m.group(1), p.stderr

    def leftovers(self) -> dict[str, int]:
        """Mounts below the store, runc containers and runtime dirs, work dirs in tmp/."""
        containers = 0
        for state in self.runtime_dir.glob("irctl-*"):
            listed = subprocess.run(["runc", "--root", str(state), "list", "--quiet"], capture_output=True, text=True)
            containers += len(listed.stdout.split())
        return {"mounts": len(mounts_under(self.cache)), "containers": containers,
                "runtime_dirs": len(list(self.runtime_dir.glob("irctl-*"))),
                "work_dirs": len([p for p in (self.cache / "tmp").glob("*")]) if (self.cache / "tmp").exists() else 0}


def _complete_oci_tar(path: Path) -> bool:
    try:
        with tarfile.open(path) as tf:
            return "index.json" in tf.getnames()
    except (tarfile.TarError, OSError, EOFError):
        return False


def test_random_sigkills_lose_nothing(tmp_path, busybox_layout):
    kills = int(os.environ.get("IRCTL_SECURITY_KILLS", "30"))
    seed = int(os.environ.get("IRCTL_SECURITY_SEED", str(int(time.time()))))
    rng = random.Random(seed)
    b = Builds(tmp_path, busybox_layout)
    try:
        t0 = time.monotonic()
        reference, _ = b.build(tmp_path / "reference.tar", cache=tmp_path / "clean-cache")
        full = time.monotonic() - t0
        after_kill: Counter = Counter()
        phases: Counter = Counter()
        partial_outputs = 0
        for i in range(kills):
            killed_out = tmp_path / "killed.tar"
            killed_out.unlink(missing_ok=True)
            log = tmp_path / "killed.log"
            with open(log, "w") as f:
                p = subprocess.Popen(b.argv(killed_out, "--no-cache") if i % 3 else b.argv(killed_out),
                                     stdout=f, stderr=subprocess.STDOUT, env=b.env(), cwd=ROOT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
                time.sleep(rng.uniform(0.05, 0.3) if i % 6 == 0 else rng.uniform(0.3, full * 0.95))  # some at startup
                with_contextlib_suppress(lambda: os.killpg(p.pid, signal.SIGKILL))
                p.wait()
            steps = [line for line in log.read_text().splitlines() if re.match(r"#\d+ \[", line) or "export" in line]
            phases[(steps[-1].split("] ", 1)[-1][:24] if steps else "startup")] += 1
            if killed_out.exists() and not _complete_oci_tar(killed_out):
                partial_outputs += 1
            for k, v in b.leftovers().items():
                after_kill[k] += bool(v)
            digest, stderr = b.build(tmp_path / "after.tar")
            assert digest == reference, f"kill {i} (seed {seed}): the next build made {digest}, not {reference}\n{stderr}"
            left = b.leftovers()
            assert left["mounts"] == 0 and left["containers"] == 0 and left["work_dirs"] == 0, (i, seed, left)
        # a build that fails cleans up after itself too
        bad = write_ctx(tmp_path / "bad", {"Dockerfile": "FROM busybox\nRUN --mount=type=cache,target=/c sleep 0.2; exit 7\n"})
        p = subprocess.run([*b.argv(tmp_path / "bad.tar")[:4], str(bad), *b.argv(tmp_path / "bad.tar")[5:]],
                           capture_output=True, text=True, env=b.env(), cwd=ROOT, timeout=120)
        assert p.returncode != 0 and "exit code 7" in p.stderr
        assert b.leftovers() == {"mounts": 0, "containers": 0, "runtime_dirs": 0, "work_dirs": 0}
        print(f"\nkills: {kills} survived (seed {seed}, clean build {full:.1f}s); killed during: {dict(phases)}; "
              f"kills that left (before the next build) mounts/containers/runtime dirs/work dirs: {dict(after_kill)}; "
              f"partial output files: {partial_outputs}")
    finally:
        for state in b.runtime_dir.glob("irctl-*"):
            for c in subprocess.run(["runc", "--root", str(state), "list", "--quiet"], capture_output=True,
                                    text=True).stdout.split():
                subprocess.run(["runc", "--root", str(state), "delete", "--force", c], capture_output=True)
        shutil.rmtree(b.runtime_dir, ignore_errors=True)


def with_contextlib_suppress(fn) -> None:
    try:
        fn()
    except ProcessLookupError:
        pass


def test_kill_during_layer_extraction_leaves_nothing(tmp_path):
    """A build killed while it extracts a big pulled layer: the next build succeeds and the half
    extraction (``tmp/x-*``) is gone — it is named after its layer lock, which is free again."""
    from tests.security.conftest import entry, make_layout, tar_bytes

    layout = make_layout(tmp_path / "layout", [tar_bytes([entry(f"d{i % 50}/f{i}", data=b"x" * 100)
                                                          for i in range(15000)])])
    ctx = write_ctx(tmp_path / "ctx", {"Dockerfile": "FROM big\nRUN test -f /d1/f1\n"})
    cache = tmp_path / "cache"
    argv = [sys.executable, "-m", "irctl", "build", str(ctx), "--progress", "plain",
            "--build-context", f"big=oci-layout://{layout}:latest"]
    env = {**os.environ, "IRCTL_CACHE_DIR": str(cache)}
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
                         start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list((cache / "tmp").glob("x-*")) and p.poll() is None:
        time.sleep(0.02)
    time.sleep(0.2)
    with_contextlib_suppress(lambda: os.killpg(p.pid, signal.SIGKILL))
    p.wait()
    r = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert r.returncode == 0, r.stderr
    assert sorted(x.name for x in (cache / "tmp").iterdir()) == []
    assert mounts_under(cache) == []


def test_stale_blob_temp_files_are_removed_once_free(tmp_path):
    """A download or blob write killed midway leaves ``tmp/ingest-*`` or ``tmp/blob-*``, locked before
    it had that name: the next session removes it as soon as its writer's lock is free (the build
    after a kill, at once), never a live writer's; a hidden ``.blob-*`` (a writer that died between
    making and naming it) only once it is old."""
    import fcntl

    from backend.store.blobs import BlobWriter
    from backend.store.cache import CacheStore

    store = CacheStore(tmp_path / "cache")
    dead = store.tmp_dir / "ingest-dead"
    dead.write_bytes(b"half a layer")
    just_killed = store.tmp_dir / "blob-just-killed"
    just_killed.write_bytes(b"written a moment ago")
    live = BlobWriter(store.blobs)
    live.write(b"still downloading")
    os.utime(live.tmp_path, (time.time() - 3600, time.time() - 3600))
    fresh = store.tmp_dir / ".blob-fresh"
    fresh.write_bytes(b"just created")
    old = store.tmp_dir / ".ingest-old"
    old.write_bytes(b"made an hour ago")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    with store.session():
        pass
    assert not dead.exists() and not just_killed.exists() and not old.exists()
    assert Path(live.tmp_path).exists() and fresh.exists()
    assert Path(live.tmp_path).name.startswith("ingest-")
    fd = os.open(live.tmp_path, os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
