"""Remote execution under attack or interruption: every way a step must stay on the client (a fake
server records what was sent), and, against a real BuildGrid and irctl workers, what a client that
goes away leaves running on the farm."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import uuid

import pytest

import backend.reapi.client as reapi_client
from backend.entitlements import Entitlements
from backend.events import Recorder
from backend.farm import FarmOptions
from backend.ops.debugshell import DebugShell
from backend.reapi.address import parse_endpoint
from backend.reapi.client import Caps
from backend.reapi.errors import RemoteError
from backend.solve.solver import SolveOptions, solve
from ir import builder as b
from backend.farm.step import step_action
from tests.support.cli import irctl_argv, write
from tests.support.fake_executor import FakeExecutor
from tests.support.farmsteps import busybox_layer, client, exec_step, upload_base

SECRET = b"s3cr3t-value-never-sent"


def _solve_remote(tmp_path, state: b.State, **options) -> tuple[FakeExecutor, Recorder]:
    fake, events = FakeExecutor(), Recorder()
    endpoint = parse_endpoint("grpc://127.0.0.1:9", "--remote")[0]
    solve(b.build_document({"default": state}), ["default"], SolveOptions(
        cache_dir=tmp_path / "cache", executor=fake, on_event=events, farm=FarmOptions(execute=endpoint), **options))
    return fake, events


RUN = b.scratch().with_meta("RUN it")
STAYS = {  # id -> (the step, the solve's options, why it stays)
    "ssh agent": (RUN.run(["echo", "ran"], mounts=[b.ssh("/ssh")]), {}, "it mounts an ssh agent at /ssh"),
    "secret as env": (RUN.run(["echo", "ran"], mounts=[b.secret("tok", env="TOKEN")]), {"secrets": {"tok": SECRET}},
                      "it mounts a secret at"),
    "the op's host network": (RUN.run(["echo", "ran"], network="host"),
                              {"entitlements": Entitlements(network_host=True)}, "it uses the host's network"),
    "--network host": (RUN.run(["echo", "ran"]), {"network": "host", "entitlements": Entitlements(network_host=True)},
                       "it uses the host's network"),
    "insecure": (RUN.run(["echo", "ran"], security="insecure"), {"entitlements": Entitlements(insecure=True)},
                 "it asks for security=insecure"),
    "--on-error=shell": (RUN.run(["echo", "ran"]), {"debug_shell": DebugShell()},
                         "--on-error=shell opens its shell here"),
}


@pytest.mark.parametrize("case", list(STAYS))
def test_a_step_that_must_stay_here_never_reaches_the_server(tmp_path, monkeypatch, case):
    """The client's side of the rule a worker enforces too: nothing of such a step is uploaded or
    executed, it runs here, and one line says why."""
    sent: list = []

    class Server:
        def __init__(self, endpoint, **_) -> None:
            pass

        def capabilities(self) -> Caps:
            return Caps(exec_enabled=True, ac_update=True, max_batch=4 << 20, digest_ok=True)

        def __getattr__(self, name):  # anything else the client would send
            return lambda *args, **kwargs: sent.append(name)

        def close(self) -> None:
            pass

    monkeypatch.setattr(reapi_client, "Remote", Server)
    state, options, why = STAYS[case]
    fake, events = _solve_remote(tmp_path, state, **options)
    assert sent == [] and len(fake.runs) == 1
    said = [e.text for e in events.of("info") if "runs on this machine, not the build farm: " in e.text]
    assert len(said) == 1 and why in said[0], said


def wait_for(proc, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in line for line in proc.lines):
        assert proc.poll() is None and time.monotonic() < deadline, "\n".join(proc.lines)
        time.sleep(0.05)


@pytest.mark.e2e
def test_a_cancelled_execution_stops_the_step_on_the_worker(buildgrid, workers, tmp_path):
    """A client interrupted mid-step (Ctrl-C, a sibling step failed) cancels the operation on the
    server, so the worker kills the step instead of running it to its end for nobody."""
    url = buildgrid.url
    base = upload_base(url, busybox_layer(tmp_path / "bb"))
    worker = workers(url, tmp_path / "w", "c1")
    action, blobs = step_action(exec_step(base, "sleep 60", description="RUN forever"))
    cancel, failed = threading.Event(), []

    def run() -> None:
        with client(url) as remote:
            remote.upload_blobs({d: blobs[d] for d in remote.find_missing(list(blobs))})
            try:
                remote.execute(action, skip_cache_lookup=True, cancel=cancel)
            except RemoteError as e:
                failed.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_for(worker, "irctl worker: c1: RUN forever: started")
    time.sleep(0.5)
    cancel.set()
    thread.join(10)
    assert failed and "cancelled" in str(failed[0])
    deadline = time.monotonic() + 20  # the step's end, well before its 60 s
    while not (ended := [line for line in worker.lines if "RUN forever: " in line and ": started" not in line]):
        assert time.monotonic() < deadline, "the step still runs on the worker:\n" + "\n".join(worker.lines)
        time.sleep(0.1)
    assert "RUN forever: irctl worker c1 stopped before the step ended (" in ended[0]  # killed, not finished


@pytest.mark.e2e
def test_an_interrupted_remote_build_stops_its_step_on_the_worker(tmp_path, busybox_layout, buildgrid, workers):
    """Ctrl-C on ``irctl build --remote`` while a RUN runs on a worker: the build ends at once, and the
    worker kills the step (it does not run its 60 s for nobody)."""
    worker = workers(buildgrid.url, tmp_path / "w", "i1")
    nonce = uuid.uuid4().hex
    write(tmp_path / "ctx", {"Dockerfile": f"FROM base\nRUN echo {nonce}; sleep 60\n"})
    client_ = subprocess.Popen(irctl_argv("build", "--progress", "plain", "--cache-dir", tmp_path / "c",
                                          "--build-context", f"base=oci-layout://{busybox_layout}", "--remote",
                                          buildgrid.url, tmp_path / "ctx"),
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(worker, f"irctl worker: i1: [2/2] RUN echo {nonce}; sleep 60: started")
        time.sleep(0.5)
        client_.send_signal(signal.SIGINT)
        _, stderr = client_.communicate(timeout=20)
    finally:
        client_.kill()
    assert client_.returncode != 0 and "Traceback" not in stderr
    wait_for(worker, f"RUN echo {nonce}; sleep 60: irctl worker i1 stopped before the step ended (", timeout=20)
