"""Two builds at once on one cache store (identical builds committing the same layers, and builds
sharing a cache mount in each sharing mode) both finish correctly; ``--network none`` really has
no network, and the default network does not reach the host's loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import irctl
from tests.security.conftest import write_ctx

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]

CACHE_STEP = """FROM busybox
ARG WHO
RUN --mount=type=cache,target=/c,id=together,sharing={mode} \\
    echo start-$WHO >> /c/log; sleep 1.5; echo end-$WHO >> /c/log; cp /c/log /seen
"""


def _start(ctx: Path, out: Path, cache: Path, layout_ctx: list[str], *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "irctl", "build", str(ctx), "--progress", "plain", *layout_ctx,
                             "--output", f"type=local,dest={out}", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "IRCTL_CACHE_DIR": str(cache)}, stdin=subprocess.DEVNULL)


def _finish(p: subprocess.Popen) -> str:
    out, err = p.communicate(timeout=180)
    assert p.returncode == 0, err
    return err


@pytest.mark.parametrize("mode", ["shared", "private", "locked"])
def test_two_builds_share_a_cache_mount(tmp_path, layout_ctx, mode):
    ctx = write_ctx(tmp_path / "ctx", {"Dockerfile": CACHE_STEP.format(mode=mode)})
    cache = tmp_path / "cache"
    procs = {who: _start(ctx, tmp_path / f"out-{who}", cache, layout_ctx, "--build-arg", f"WHO={who}")
             for who in ("a", "b")}
    for p in procs.values():
        _finish(p)
    seen = {who: (tmp_path / f"out-{who}" / "seen").read_text().split() for who in procs}
    logs = [p.read_text().split() for p in (cache / "mounts").glob("*/log")]
    assert len(logs) == 1, logs
    log = logs[0]
    for who in procs:
        assert seen[who][-2:] == [f"start-{who}", f"end-{who}"] or f"end-{who}" in seen[who], seen
    if mode == "locked":  # one after the other, each saw whole runs only
        assert sorted([log[:2], log[2:]]) == [["start-a", "end-a"], ["start-b", "end-b"]], log
    elif mode == "shared":  # at the same time, on the same dir
        assert sorted(log) == ["end-a", "end-b", "start-a", "start-b"], log
        assert log[:2] in (["start-a", "start-b"], ["start-b", "start-a"]), f"the runs did not overlap: {log}"
    else:  # private: whoever found the dir busy worked on a fresh copy that was thrown away
        assert sorted(log) in (["end-a", "start-a"], ["end-b", "start-b"]), log
        loser = "a" if "start-b" in log else "b"
        assert seen[loser] == [f"start-{loser}", f"end-{loser}"], seen
    print(f"{mode}: cache mount log {log}")


def test_identical_builds_at_once(tmp_path, layout_ctx):
    files = {f"f/{i}.txt": f"{i}\n" for i in range(200)}
    ctx = write_ctx(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nCOPY f/ /f/\nRUN ls /f | wc -l > /n && sleep 0.5\n"
                                       "RUN echo done >> /n\n", **files})
    cache = tmp_path / "cache"
    for round_ in range(2):  # the second round starts from a warm store
        procs = [_start(ctx, tmp_path / f"out-{round_}-{i}", cache, layout_ctx, "--no-cache") for i in range(3)]
        for p in procs:
            _finish(p)
        for i in range(3):
            assert (tmp_path / f"out-{round_}-{i}" / "n").read_text() == "200\ndone\n"
            assert len(list((tmp_path / f"out-{round_}-{i}" / "f").iterdir())) == 200


def test_network_none_has_only_loopback(tmp_path, layout_ctx, registry):
    host, port = registry.split(":")  # (busybox-static's wget crashes resolving; nc takes an address)
    probe = (f"cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' > /ifaces; "
             f"(printf 'GET /v2/ HTTP/1.0\\r\\n\\r\\n'; sleep 1) | timeout 5 nc -w 3 {host} {port} | head -1 > /net 2>&1; "
             "grep -q 'HTTP/1.. 200' /net && echo reachable > /net || echo unreachable > /net")
    ctx = write_ctx(tmp_path / "ctx", {"Dockerfile": f"FROM busybox\nRUN --network=none {probe}\n"})
    out = tmp_path / "none"
    r = irctl("build", ctx, "--progress", "plain", *layout_ctx, "--output", f"type=local,dest={out}",
              env={"IRCTL_CACHE_DIR": str(tmp_path / "cache")})
    assert r.code == 0, r.stderr
    assert (out / "ifaces").read_text().split() == ["lo"]
    assert (out / "net").read_text() == "unreachable\n"
    # the default network is a private namespace: the host's loopback registry is out of reach there too
    (ctx / "Dockerfile").write_text(f"FROM busybox\nRUN {probe}\n")
    out = tmp_path / "default"
    r = irctl("build", ctx, "--progress", "plain", *layout_ctx, "--output", f"type=local,dest={out}",
              env={"IRCTL_CACHE_DIR": str(tmp_path / "cache")})
    assert r.code == 0, r.stderr
    assert sorted((out / "ifaces").read_text().split()) == ["lo", "tap0"]
    assert (out / "net").read_text() == "unreachable\n"
    # the control: the host's network (granted) reaches the registry, so the probe can tell
    out = tmp_path / "host"
    r = irctl("build", ctx, "--progress", "plain", *layout_ctx, "--output", f"type=local,dest={out}",
              "--network", "host", "--allow", "network.host", env={"IRCTL_CACHE_DIR": str(tmp_path / "cache")})
    assert r.code == 0, r.stderr
    assert (out / "net").read_text() == "reachable\n"
