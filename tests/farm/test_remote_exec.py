"""``irctl build --remote`` end to end: a BuildGrid server on loopback, two ``irctl worker`` processes
with their own cache dirs (two machines in miniature), and clients with their own ``--cache-dir``.

Which RUN steps executed, and where, is read from ``--progress plain`` (``#N DONE 2.1s on worker-1``
for a step a worker ran, ``#N DONE 0.3s`` for one that ran here, ``#N CACHED`` for a hit); image
digests from the OCI archive ``-o type=oci`` writes (SOURCE_DATE_EPOCH is set, so equal inputs give
equal images).  The server is shared by the session: every test's steps carry a nonce, so none is
an earlier test's cache hit."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

from tests.support.buildgrid import start_worker, stop_worker
from tests.support.cli import Result, irctl, write

pytestmark = pytest.mark.e2e

ENV = {"SOURCE_DATE_EPOCH": "1700000000"}


@pytest.fixture(scope="module")
def farm(buildgrid, tmp_path_factory):
    """Two workers on the session's server, each with its own cache dir: their names."""
    procs = [start_worker(buildgrid.url, tmp_path_factory.mktemp(f"worker-{n}"), f"worker-{n}") for n in (1, 2)]
    yield ["worker-1", "worker-2"]
    for p in procs:
        stop_worker(p)


def build(ctx: Path, machine: Path, layout: Path, *args: str, code: int = 0, env: dict | None = None) -> Result:
    """``irctl build`` of ``ctx`` (``FROM base``: the OCI layout ``layout``) on the "machine" whose store
    is ``machine``."""
    r = irctl("build", "--progress", "plain", "--cache-dir", machine, "--build-context",
              f"base=oci-layout://{layout}", *args, ctx, env={**ENV, **(env or {})})
    assert r.code == code, r.stderr
    assert "Traceback" not in r.stderr
    return r


def steps(stderr: str) -> dict[str, str]:
    """Each RUN step → how it ended: ``on worker-N``, ``here`` or ``CACHED``."""
    names: dict[str, str] = {}
    out = {}
    for line in stderr.splitlines():
        if m := re.match(r"#(\d+) DONE [\d.]+s(?: on (\S+))?$", line):
            if names.get(m[1], "").startswith("RUN "):
                out[names[m[1]]] = m[2] or "here"
        elif (m := re.match(r"#(\d+) CACHED$", line)) and names.get(m[1], "").startswith("RUN "):
            out[names[m[1]]] = "CACHED"
        elif m := re.match(r"#(\d+) \[[^\]]*\] (.*)", line):
            names.setdefault(m[1], m[2])
    return out


def image_digest(archive: Path) -> str:
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    return index["manifests"][0]["digest"]


def three_stages(tmp_path: Path, nonce: str) -> tuple[Path, list[str]]:
    runs = [f"RUN echo {nonce}-a > /a && sleep 1", f"RUN echo {nonce}-b > /b && sleep 1",
            "RUN cat /a /b > /ab && echo built"]
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"""FROM base AS a
{runs[0]}
FROM base AS b
{runs[1]}
FROM base
COPY --from=a /a /a
COPY --from=b /b /b
COPY src.txt /src.txt
{runs[2]}
""", "src.txt": "context\n"})
    return ctx, runs


def test_a_multi_stage_build_runs_on_the_workers_and_makes_the_local_build_s_image(
        tmp_path, busybox_layout, buildgrid, farm):
    nonce = uuid.uuid4().hex
    ctx, runs = three_stages(tmp_path, nonce)
    remote = build(ctx, tmp_path / "A", busybox_layout, "--remote", buildgrid.url, "-o",
                   f"type=oci,dest={tmp_path / 'remote.tar'}", "-o", f"type=local,dest={tmp_path / 'out'}")
    where = steps(remote.stderr)
    assert set(where) == set(runs), remote.stderr
    assert set(where.values()) <= set(farm), remote.stderr  # every RUN on a worker, named
    assert (tmp_path / "out" / "ab").read_text() == f"{nonce}-a\n{nonce}-b\n"
    assert re.search(r"^#\d+ \d+\.\d+ built$", remote.stderr, re.M), remote.stderr  # the step's output, shown
    local = build(ctx, tmp_path / "L", busybox_layout, "-o", f"type=oci,dest={tmp_path / 'local.tar'}")
    assert set(steps(local.stderr).values()) == {"here"}
    assert image_digest(tmp_path / "remote.tar") == image_digest(tmp_path / "local.tar")


def test_a_second_client_with_an_empty_cache_executes_nothing_and_makes_the_same_image(
        tmp_path, busybox_layout, buildgrid, farm):
    nonce = uuid.uuid4().hex
    ctx, runs = three_stages(tmp_path, nonce)
    first = build(ctx, tmp_path / "A", busybox_layout, "--remote", buildgrid.url, "-o",
                  f"type=oci,dest={tmp_path / 'a.tar'}")
    assert set(steps(first.stderr).values()) <= set(farm)
    second = build(ctx, tmp_path / "B", busybox_layout, "--remote", buildgrid.url, "-o",
                   f"type=oci,dest={tmp_path / 'b.tar'}")
    assert steps(second.stderr) == {run: "CACHED" for run in runs}, second.stderr
    assert image_digest(tmp_path / "b.tar") == image_digest(tmp_path / "a.tar")


def test_a_step_that_fails_on_a_worker_fails_the_build_as_it_fails_here(tmp_path, busybox_layout, buildgrid, farm):
    nonce = uuid.uuid4().hex
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM base\n"
                                                 f"RUN echo {nonce} && echo 'it broke' >&2 && exit 7\n"})
    remote = build(ctx, tmp_path / "A", busybox_layout, "--remote", buildgrid.url, code=1)
    local = build(ctx, tmp_path / "L", busybox_layout, code=1)

    def report(stderr: str) -> list[str]:
        """The error report: from the failed step's ERROR line on, without the times."""
        lines = stderr.splitlines()
        start = next(i for i, line in enumerate(lines) if re.match(r"#\d+ ERROR ", line))
        return [re.sub(r"\d+\.\d+s?", "T", line) for line in lines[start:]]

    assert report(remote.stderr) == report(local.stderr)
    assert "did not complete successfully: exit code 7" in remote.stderr
    assert "it broke" in "\n".join(report(remote.stderr)) and nonce in "\n".join(report(remote.stderr))


RECORDER = """
import pathlib, sys
import backend.reapi.client as c
out = pathlib.Path(sys.argv.pop(1))
n = [0]
def keep(data):
    n[0] += 1
    (out / str(n[0])).write_bytes(bytes(data))
upload_bytes, upload_file, update = c.Remote.upload_bytes, c.Remote.upload_file, c.Remote.update_action_result
def upload_bytes_(self, data):
    keep(data)
    return upload_bytes(self, data)
def upload_file_(self, path, digest):
    keep(pathlib.Path(path).read_bytes())
    return upload_file(self, path, digest)
def update_(self, action, result):
    keep(result.SerializeToString())
    return update(self, action, result)
c.Remote.upload_bytes, c.Remote.upload_file, c.Remote.update_action_result = upload_bytes_, upload_file_, update_
sys.argv[0] = "irctl"
from irctl.entry import main
main()
"""


def test_a_secret_step_runs_here_and_its_secret_never_reaches_the_server(tmp_path, busybox_layout, buildgrid, farm):
    """Every byte the client sends the server (blobs, gzip layers unpacked, action cache entries) is
    searched for the secret's value; the steps around the secret one still run on the workers."""
    nonce = uuid.uuid4().hex
    value = f"s3cr3t-{nonce}"
    (tmp_path / "tok").write_text(value)
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"""FROM base
RUN echo {nonce} > /before
RUN --mount=type=secret,id=tok test "$(cat /run/secrets/tok)" = {value} && echo used > /used
RUN cat /before /used > /after
"""})
    sent = tmp_path / "sent"
    sent.mkdir()
    proc = subprocess.run([sys.executable, "-c", RECORDER, str(sent), "build", "--progress", "plain", "--cache-dir",
                           str(tmp_path / "A"), "--build-context", f"base=oci-layout://{busybox_layout}", "--remote",
                           buildgrid.url, "--secret", f"id=tok,src={tmp_path / 'tok'}", str(ctx)],
                          capture_output=True, text=True, env={**os.environ, **ENV}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    where = steps(proc.stderr)
    secret_step = next(s for s in where if "secret" in s)
    assert where.pop(secret_step) == "here"
    assert set(where.values()) <= set(farm) and len(where) == 2, proc.stderr
    assert "runs on this machine, not the build farm: it mounts a secret at /run/secrets/tok" in proc.stderr
    blobs = [p.read_bytes() for p in sent.iterdir()]
    assert len(blobs) > 5  # (the recorder saw the uploads)
    unpacked = [gzip.decompress(b) for b in blobs if b[:2] == b"\x1f\x8b"]
    assert unpacked  # layers went up
    assert not [b for b in blobs + unpacked if value.encode() in b]


def test_the_client_needs_no_runtime(tmp_path, busybox_layout, buildgrid, farm):
    """With no runc or crun on PATH (nor anything else), every RUN still builds: on the workers."""
    nonce = uuid.uuid4().hex
    ctx, runs = three_stages(tmp_path, nonce)
    empty = tmp_path / "bin"
    empty.mkdir()
    r = build(ctx, tmp_path / "A", busybox_layout, "--remote", buildgrid.url, "-o",
              f"type=local,dest={tmp_path / 'out'}", env={"PATH": str(empty)})
    assert set(steps(r.stderr).values()) <= set(farm) and len(steps(r.stderr)) == 3, r.stderr
    assert (tmp_path / "out" / "ab").read_text() == f"{nonce}-a\n{nonce}-b\n"
    local = build(ctx, tmp_path / "L", busybox_layout, code=1, env={"PATH": str(empty)})  # (the test can fail)
    assert "runc" in local.stderr or "crun" in local.stderr


def test_an_unreachable_server_is_one_line_and_exit_1(tmp_path, busybox_layout):
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM base\nRUN true\n"})
    r = build(ctx, tmp_path / "A", busybox_layout, "--remote", "grpc://127.0.0.1:1", code=1)
    assert r.stderr.splitlines() == [
        "error: --remote: REAPI server grpc://127.0.0.1:1: cannot reach it (connection refused)"], r.stderr


def test_solve_sends_its_steps_too(tmp_path, busybox_layout, buildgrid, farm):
    nonce = uuid.uuid4().hex
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM base\nRUN echo {nonce} > /s\n"})
    graph = tmp_path / "g.ir"
    r = irctl("compile", ctx, "-o", graph, "--build-context", f"base=oci-layout://{busybox_layout}",
              env={"IRCTL_CACHE_DIR": str(tmp_path / "compile")})
    assert r.code == 0, r.stderr
    r = irctl("solve", graph, "--progress", "plain", "--cache-dir", tmp_path / "A", "--oci-layout",
              f"base={busybox_layout}", "--remote", buildgrid.url, "-o", f"type=local,dest={tmp_path / 'out'}", env=ENV)
    assert r.code == 0, r.stderr
    assert set(steps(r.stderr).values()) <= set(farm) and len(steps(r.stderr)) == 1, r.stderr
    assert (tmp_path / "out" / "s").read_text() == f"{nonce}\n"
