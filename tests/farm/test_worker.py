"""`irctl worker` end to end: a BuildGrid server on loopback, worker processes with their own cache
dirs, and Execute requests sent straight through the REAPI client with envelopes made by the client's
own encoder (``backend.farm.step``) — so what is tested is the worker, not the build's wiring."""

from __future__ import annotations

import gzip
import io
import signal
import tarfile
import threading
import time

import pytest

from ir import ops

from backend.farm.results import decode_result
from backend.farm.step import COMMAND, RemoteStep
from backend.oci.pull import RemoteLayer
from backend.reapi.digests import message_digest, to_proto
from backend.reapi.errors import RemoteError
from backend.reapi.protos import remote_execution_pb2 as re_pb2
from tests.support.buildgrid import start_worker, stop_worker
from tests.support.cli import irctl
from tests.support.farmsteps import KEY, SOME_INPUT, Base, busybox_layer, client, exec_step, execute, upload_base

pytestmark = pytest.mark.e2e

REFUSED, PRECONDITION = "refused the request", "refused (failed precondition)"  # INVALID_ARGUMENT, FAILED_PRECONDITION


@pytest.fixture(scope="module")
def busybox(tmp_path_factory):
    return busybox_layer(tmp_path_factory.mktemp("bb"))


@pytest.fixture(scope="module")
def base(buildgrid, busybox) -> Base:
    return upload_base(buildgrid.url, busybox)


def layer_files(remote, layer: RemoteLayer) -> dict[str, bytes]:
    data = gzip.decompress(remote.read_bytes((layer.blob, layer.size), cap=64 << 20))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


@pytest.fixture(scope="module")
def worker(buildgrid, tmp_path_factory):
    """One worker for the module's tests (its log: ``worker.log``)."""
    proc = start_worker(buildgrid.url, tmp_path_factory.mktemp("w1") / "cache", "w1")
    yield proc
    assert stop_worker(proc) == 0


def log_of(proc) -> str:
    return "\n".join(proc.lines)


def test_a_worker_runs_an_exec_step_and_returns_its_layer(buildgrid, base, worker):
    remote = client(buildgrid.url)
    try:
        response = execute(remote, exec_step(base, "echo hello from $(hostname) > /out; echo printed"))
        assert response.status.code == 0, response.status.message
        result = response.result
        assert result.exit_code == 0 and result.execution_metadata.worker == "w1"
        assert result.stdout_raw == b"printed\n"
        outputs, layers = decode_result(remote, result)
        assert len(outputs) == 1 and outputs[0].layers[0] == base[0] and len(outputs[0].layers) == 2
        made = outputs[0].layers[1]
        assert outputs[0].created[0] is None and outputs[0].created[1] > 0
        assert layer_files(remote, layers[made]) == {"out": b"hello from buildkitsandbox\n"}
    finally:
        remote.close()
    assert "irctl worker: w1: RUN test: done (" in log_of(worker)


def test_a_failing_step_returns_its_exit_code_and_output_tail(buildgrid, base, worker):
    with client(buildgrid.url) as remote:
        response = execute(remote, exec_step(base, "seq 1 80; echo oops >&2; exit 3", description="RUN fails"))
    result = response.result
    assert response.status.code == 0 and result.exit_code == 3 and result.execution_metadata.worker == "w1"
    assert result.stdout_raw.decode().splitlines() == [*map(str, range(32, 81)), "oops"]  # the last 50 lines
    assert b"exit code 3" in result.stderr_raw and not result.output_files
    assert "irctl worker: w1: RUN fails: exit code 3 (" in log_of(worker)


def raw_action(command: list[str], step_node: tuple[str, int]):
    """An action made by hand: ``command``, and an input root whose irctl/step.msgpack is ``step_node``
    (a digest that need not exist: a worker must refuse it by its size before reading it)."""
    blobs = {}

    def put(msg):
        data, d = message_digest(msg)
        blobs[d] = data
        return to_proto(d)

    mine = re_pb2.Directory(files=[re_pb2.FileNode(name="step.msgpack", digest=to_proto(step_node))])
    root = re_pb2.Directory(directories=[re_pb2.DirectoryNode(name="irctl", digest=put(mine))])
    action = re_pb2.Action(command_digest=put(re_pb2.Command(arguments=command)), input_root_digest=put(root))
    data, digest = message_digest(action)
    blobs[digest] = data
    return digest, blobs


def _hostile(base) -> dict:
    """id -> (what to execute, gRPC code, words of the status message)."""
    diff_id, layer = base
    fake = "sha256:" + "a" * 64  # a layer id that is not what the blob unpacks to
    lying = RemoteStep(exec_step(base, "true").op, ((fake,),), {fake: RemoteLayer(layer.blob, layer.media_type,
                                                                                  layer.size, fake, "")},
                       "none", "RUN lying", KEY)
    absent = RemoteStep(exec_step(base, "true").op, ((fake,),),
                        {fake: RemoteLayer("sha256:" + "b" * 64, layer.media_type, 123, fake, "")}, "none",
                        "RUN absent", KEY)
    file_op = ops.Op(inputs=(ops.Ref(SOME_INPUT),), file=ops.FileOp(actions=(
        ops.FileAction(mkdir=ops.MkdirAction(path="/x")),)))
    secret = ops.Mount("/run/secrets/token", type="secret", secret=ops.SecretOptions(id="token"))
    return {
        "not an exec": (RemoteStep(file_op, ((diff_id,),), {diff_id: layer}, "none", "", KEY), REFUSED,
                        "a file op is not a process"),
        "host network": (exec_step(base, "true", network="host"), REFUSED, "host's network"),
        "host network in the op only": (_op_network(exec_step(base, "true", network="default"), "host"), REFUSED,
                                        "the op asks for network host"),
        "insecure": (exec_step(base, "true", security="insecure"), REFUSED, "security=insecure"),
        "secret": (exec_step(base, "cat /run/secrets/token", mounts=(secret,)), REFUSED,
                   "mounts a secret at /run/secrets/token"),
        "invalid op": (exec_step(base, "true", cwd="relative"), REFUSED, "cwd must be an absolute path"),
        "layer not what it claims": (lying, PRECONDITION, fake),
        "layer not in the CAS": (absent, PRECONDITION, "sha256:" + "b" * 64),
        "huge": (raw_action(list(COMMAND), ("sha256:" + "c" * 64, 17 << 20)), REFUSED, f"{17 << 20} bytes"),
        "not an irctl step": (raw_action(["sh", "-c", "echo pwned"], ("sha256:" + "c" * 64, 10)), REFUSED,
                              "not an irctl worker step"),
    }


def _op_network(step: RemoteStep, network: str) -> RemoteStep:
    ex = step.op.exec
    op = ops.Op(inputs=step.op.inputs, exec=ops.ExecOp(args=ex.args, mounts=ex.mounts, env=ex.env, network=network))
    return RemoteStep(op, step.inputs, step.layers, step.network, step.description, step.key)


HOSTILE = ["not an exec", "host network", "host network in the op only", "insecure", "secret", "invalid op",
           "layer not what it claims", "layer not in the CAS", "huge", "not an irctl step"]


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_action_fails_with_a_clear_message(buildgrid, base, worker, case):
    what, code, words = _hostile(base)[case]
    remote = client(buildgrid.url)
    try:
        with pytest.raises(RemoteError) as failed:  # the client reports a failed execution as one line
            if isinstance(what, RemoteStep):
                execute(remote, what)
            else:
                execute(remote, action=what[0], blobs=what[1])
        assert f"execution failed: {code} (irctl worker w1: " in str(failed.value) and words in str(failed.value)
    finally:
        remote.close()
    assert worker.poll() is None


def test_after_a_refused_action_the_worker_runs_the_next(buildgrid, base, worker):
    remote = client(buildgrid.url)
    try:
        with pytest.raises(RemoteError):
            execute(remote, exec_step(base, "true", network="host"))
        after = execute(remote, exec_step(base, "echo still serving"))
        assert after.result.exit_code == 0 and after.result.stdout_raw == b"still serving\n"
    finally:
        remote.close()
    assert ": step.msgpack: refused: it uses the host's network (" in log_of(worker)  # logged with its reason


class Executing:
    """``execute`` in a thread of its own, so a test can act on the worker while the step runs."""

    def __init__(self, url: str, step: RemoteStep) -> None:
        self.response, self.error = None, None
        self._thread = threading.Thread(target=self._run, args=(url, step), daemon=True)
        self._thread.start()

    def _run(self, url: str, step: RemoteStep) -> None:
        try:
            with client(url) as remote:
                self.response = execute(remote, step)
        except Exception as e:  # noqa: BLE001 - the test reads it
            self.error = e

    def result(self, timeout: float):
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the execution did not end"
        if self.error is not None:
            raise self.error
        return self.response


def wait_for(proc, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in line for line in proc.lines):
        assert proc.poll() is None and time.monotonic() < deadline, log_of(proc)
        time.sleep(0.05)


def test_a_worker_killed_mid_step_gives_it_to_another_and_its_store_recovers(fresh_buildgrid, busybox, workers,
                                                                            tmp_path):
    url = fresh_buildgrid.url
    base = upload_base(url, busybox)
    first = workers(url, tmp_path / "k1", "k1")
    running = Executing(url, exec_step(base, "sleep 3; echo finished", description="RUN sleep"))
    wait_for(first, "irctl worker: k1: RUN sleep: started")
    time.sleep(0.5)  # in the container by now
    first.kill()
    killed = time.monotonic()
    first.wait()
    second = workers(url, tmp_path / "k2", "k2")
    response = running.result(timeout=60)
    retried = time.monotonic() - killed
    assert response.result.exit_code == 0 and response.result.stdout_raw == b"finished\n"
    assert response.result.execution_metadata.worker == "k2"
    # re-queued after the server's bot keepalive (5 s), then run again whole (3 s)
    print(f"killed mid-step: the step ended on another worker {retried:.1f}s after the kill")
    assert retried < 20
    assert stop_worker(second) == 0
    again = workers(url, tmp_path / "k1", "k1")  # the killed worker's store: recovered as a killed build's
    with client(url) as remote:
        assert execute(remote, exec_step(base, "echo again")).result.stdout_raw == b"again\n"
    assert stop_worker(again) == 0
    assert "0.0 MB of layers fetched" in log_of(again)  # its layer cache survived the kill
    assert len(list((tmp_path / "k1" / "tmp").glob("s-*"))) == 0  # the dead session's work dir was reaped


def test_sigterm_lets_the_running_step_finish_then_the_worker_exits_0(fresh_buildgrid, busybox, workers, tmp_path):
    url = fresh_buildgrid.url
    base = upload_base(url, busybox)
    worker = workers(url, tmp_path / "t1", "t1")
    running = Executing(url, exec_step(base, "sleep 2; echo finished", description="RUN sleep"))
    wait_for(worker, "irctl worker: t1: RUN sleep: started")
    worker.send_signal(signal.SIGTERM)
    response = running.result(timeout=30)
    assert response.result.stdout_raw == b"finished\n" and response.result.execution_metadata.worker == "t1"
    assert worker.wait(timeout=20) == 0
    assert log_of(worker).splitlines()[-1] == "irctl worker: t1 stopped"


def test_a_second_sigterm_gives_the_step_back_to_the_server(fresh_buildgrid, busybox, workers, tmp_path):
    """The step marks its run in a cache mount, the worker's own: the step given back runs again on a
    worker with that store, which sees the mark (and does not sleep again)."""
    url = fresh_buildgrid.url
    base = upload_base(url, busybox)
    cache = ops.Mount("/c", type="cache", cache=ops.CacheOptions(id="marks"))
    step = exec_step(base, "if [ -e /c/mark ]; then echo second run; else touch /c/mark; sleep 60; fi",
                     mounts=(cache,), description="RUN mark")
    worker = workers(url, tmp_path / "a", "a1")
    running = Executing(url, step)
    wait_for(worker, "irctl worker: a1: RUN mark: started")
    time.sleep(0.5)
    worker.send_signal(signal.SIGTERM)
    wait_for(worker, "finishing 1 running step(s)")
    stopping = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    assert time.monotonic() - stopping < 10  # not the step's 60 s
    assert "RUN mark: irctl worker a1 stopped before the step ended" in log_of(worker)
    other = workers(url, tmp_path / "a", "a2")
    response = running.result(timeout=60)
    assert response.result.stdout_raw == b"second run\n" and response.result.execution_metadata.worker == "a2"
    assert stop_worker(other) == 0


def test_two_workers_keep_their_own_layer_cache(fresh_buildgrid, busybox, workers, tmp_path):
    """Two machines in miniature: each fetches the base once into its own store; its next step on the
    same base downloads nothing."""
    url = fresh_buildgrid.url
    base = upload_base(url, busybox)
    one, two = workers(url, tmp_path / "c1", "c1"), workers(url, tmp_path / "c2", "c2")
    for round_ in range(2):
        runs = [Executing(url, exec_step(base, f"sleep 1; echo {round_}{i}", description=f"RUN {round_}{i}"))
                for i in range(2)]
        assert sorted(r.result(timeout=60).result.execution_metadata.worker for r in runs) == ["c1", "c2"]
    for proc, cache in ((one, tmp_path / "c1"), (two, tmp_path / "c2")):
        fetched = [line.rsplit(", ", 1)[1] for line in proc.lines if ": RUN " in line and "layers fetched" in line]
        assert fetched == ["1.0 MB of layers fetched)"] + ["0.0 MB of layers fetched)"] * (len(fetched) - 1)
        assert (cache / "layers" / base[0].removeprefix("sha256:")).is_dir()


@pytest.mark.parametrize("args, line", [
    (["--server", "grpc://127.0.0.1:1"], "error: irctl worker x: cannot open a bot session: REAPI server "
                                         "grpc://127.0.0.1:1: cannot reach it (connection refused)"),
    (["--server", "http://host:1"], "error: --server 'http://host:1': expected grpc://HOST:PORT or grpcs://HOST:PORT"),
    (["--server", "grpc://127.0.0.1:1", "--jobs", "0"], "error: --jobs 0: a worker runs at least one step at a time"),
])
def test_a_worker_that_cannot_start_says_why_in_one_line(tmp_path, args, line):
    res = irctl("worker", "--name", "x", "--cache-dir", str(tmp_path), *args, timeout=30)
    assert (res.code, res.stderr) == (1, line + "\n")


def test_a_worker_with_two_jobs_runs_two_steps_at_once(fresh_buildgrid, busybox, workers, tmp_path):
    url = fresh_buildgrid.url
    base = upload_base(url, busybox)
    workers(url, tmp_path / "j", "j", jobs=2)
    with client(url) as remote:  # the base fetched once, so the timing below is the steps'
        execute(remote, exec_step(base, "true"))
    started = time.monotonic()
    runs = [Executing(url, exec_step(base, f"sleep 2; echo {i}", description=f"RUN {i}")) for i in range(2)]
    results = [r.result(timeout=60).result for r in runs]
    took = time.monotonic() - started
    assert [r.stdout_raw for r in results] == [b"0\n", b"1\n"]
    assert {r.execution_metadata.worker for r in results} == {"j"}
    assert took < 3.5, f"two 2 s steps took {took:.1f}s on a worker with --jobs 2"
