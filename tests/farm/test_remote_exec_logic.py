"""What a build makes of a farm's answers (``backend.farm.execute``), with a fake REAPI server whose
every ``Execute`` is answered by the test: a worker's failure reads as a local one, its output is
masked as a local step's is, a hostile answer is one clean line, and a build whose exec steps all go
to the farm never warms or runs the local runtime (the in-process executor says so).  No root, no
BuildGrid: tests/farm/test_remote_exec.py runs the real thing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import backend.reapi.client as client
from backend.errors import BuildError, SolveError
from backend.events import Recorder
from backend.farm import FarmOptions
from backend.farm.results import encode_result
from backend.oci.pull import RemoteLayer
from backend.ops.workspace import layers_identity
from backend.reapi.address import parse_endpoint
from backend.reapi.client import Caps
from backend.reapi.protos import remote_execution_pb2 as pb
from backend.runtime.finder import RuntimeNotFound
from backend.solve.solver import SolveOptions, solve
from backend.store.records import Output
from ir import builder as b
from tests.support.fake_executor import FakeExecutor

SECRET = b"hunter2-value"


@pytest.fixture(autouse=True)
def copy_snapshotter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRCTL_SNAPSHOTTER", "copy")


class FakeServer:
    """A REAPI server as the client sees it: a CAS in a dict, and ``answer`` for every Execute."""

    answer: pb.ExecuteResponse = pb.ExecuteResponse()
    answer_blobs: dict = {}  # what the worker put in the CAS with it
    gate: threading.Barrier | None = None  # every Execute waits there
    executed: list = []
    reachable = True

    def __init__(self, endpoint, **_) -> None:
        self.endpoint, self.url, self.blobs = endpoint, endpoint.url, {}

    def capabilities(self) -> Caps:
        if not FakeServer.reachable:
            raise client.Unreachable(self.url, "cannot reach it (connection refused)")
        return Caps(exec_enabled=True, ac_update=True, max_batch=4 << 20, digest_ok=True)

    def find_missing(self, digests):
        return {d for d in digests if d not in self.blobs}

    def upload_blobs(self, blobs) -> None:
        self.blobs.update(blobs)

    def upload_file(self, path, digest) -> None:
        self.blobs[digest] = Path(path).read_bytes()

    def read_bytes(self, digest, *, cap: int) -> bytes:
        return self.blobs[digest]

    def execute(self, action, *, skip_cache_lookup: bool, **_) -> pb.ExecuteResponse:
        self.blobs.update(FakeServer.answer_blobs)
        if FakeServer.gate is not None:
            FakeServer.gate.wait()
        FakeServer.executed.append((action, skip_cache_lookup))
        return FakeServer.answer

    def close(self) -> None:
        pass


@pytest.fixture
def farm(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(client, "Remote", FakeServer)
    FakeServer.executed, FakeServer.reachable, FakeServer.answer_blobs, FakeServer.gate = [], True, {}, None
    return FakeServer


def build(tmp_path: Path, state: b.State, executor: FakeExecutor | None = None, **options
          ) -> tuple[FakeExecutor, Recorder]:
    """Solve ``state`` with ``--remote`` on the fake server: the executor (which runs what stays
    here) and the events."""
    fake, events = executor or FakeExecutor(), Recorder()
    endpoint = parse_endpoint("grpc://127.0.0.1:9", "--remote")[0]
    opts = SolveOptions(cache_dir=tmp_path / "cache", executor=fake, on_event=events,
                        farm=FarmOptions(execute=endpoint), **options)
    solve(b.build_document({"default": state}), ["default"], opts)
    return fake, events


def failed(code: int, stdout: bytes, stderr: bytes, worker: str = "worker-1") -> pb.ExecuteResponse:
    result = pb.ActionResult(exit_code=code, stdout_raw=stdout, stderr_raw=stderr)
    result.execution_metadata.worker = worker
    return pb.ExecuteResponse(result=result)


STEP = b.scratch().with_meta("RUN make").run(["sh", "-c", "make"])


def test_a_step_a_worker_failed_fails_the_build_as_a_local_failure_reads(tmp_path, farm):
    farm.answer = failed(3, b"compiling\nit broke\n",
                         b"process '/bin/sh -c make' did not complete successfully: exit code 3\n")
    with pytest.raises(BuildError) as e:
        build(tmp_path, STEP)
    assert e.value.message == "process '/bin/sh -c make' did not complete successfully: exit code 3"
    assert e.value.exit_code == 3 and e.value.output_tail == ("compiling", "it broke")
    assert e.value.description == "RUN make" and len(farm.executed) == 1
    assert farm.executed[0][1] is False  # the server may answer from its own cache of this action


def test_no_cache_skips_the_server_s_cache_of_the_action_too(tmp_path, farm):
    farm.answer = failed(3, b"", b"")
    with pytest.raises(BuildError):
        build(tmp_path, STEP, no_cache=True)
    assert [skip for _, skip in farm.executed] == [True]


def test_a_failure_without_the_worker_s_words_is_said_as_here(tmp_path, farm):
    farm.answer = failed(3, b"", b"")
    with pytest.raises(BuildError) as e:
        build(tmp_path, STEP)
    assert e.value.message == "process 'sh -c make' did not complete successfully: exit code 3"


def test_a_worker_s_output_is_shown_and_masked_as_a_local_step_s(tmp_path, farm):
    farm.answer = failed(1, b"token is " + SECRET + b"\n", b"boom\n")
    with pytest.raises(BuildError) as e:
        build(tmp_path, STEP, secrets={"tok": SECRET})
    assert SECRET.decode() not in str(e.value) and "token is" in str(e.value)


def test_a_hostile_answer_is_one_clean_line(tmp_path, farm):
    farm.answer = failed(2, b"", b"\x1b]0;owned\x07\x1b[2Jcleared your screen\n", worker="w\x1b[31m")
    with pytest.raises(BuildError) as e:
        build(tmp_path, STEP)
    assert "\x1b" not in e.value.message and "\x07" not in e.value.message
    assert e.value.message.endswith("cleared your screen") and e.value.exit_code == 2


def test_a_result_that_is_not_this_step_s_is_refused(tmp_path, farm):
    farm.answer = failed(0, b"", b"")  # exit 0, but no irctl/result.json
    with pytest.raises(BuildError, match=r"^.*--remote: worker worker-1's result is unusable"):
        build(tmp_path, STEP)


def succeeded(farm, *outputs: tuple[str, ...], identity: str = "") -> None:
    """Answer with a result whose outputs are made of these layer ids (a blob each, never fetched)."""
    named = {lid for o in outputs for lid in o}
    layers = {lid: RemoteLayer("sha256:" + lid[7:][::-1], "application/vnd.oci.image.layer.v1.tar+gzip", 10,
                               "sha256:" + "d" * 64, "sde=None") for lid in named}
    rows = [Output(identity or layers_identity(list(o)), tuple(o), None, (None,) * len(o)) for o in outputs]
    result, blobs = encode_result(rows, layers)
    result.execution_metadata.worker = "worker-7"
    farm.answer, farm.answer_blobs = pb.ExecuteResponse(result=result), blobs


L1, L2 = "sha256:" + "1" * 63 + "a", "sha256:" + "2" * 63 + "b"


def test_a_worker_s_outputs_are_the_step_s_and_its_name_is_on_the_step(tmp_path, farm):
    succeeded(farm, (L1, L2))
    opts = dict(materialize=False)  # (the layers are named only: nothing here reads them)
    _, events = build(tmp_path, STEP, **opts)
    assert [(e.description, e.text) for e in events.of("finished")] == [("RUN make", "on worker-7")]


@pytest.mark.parametrize("outputs, identity", [(((L1,), (L2,)), ""), (((L1,),), "sha256:" + "e" * 64)])
def test_outputs_that_are_not_the_step_s_are_refused(tmp_path, farm, outputs, identity):
    succeeded(farm, *outputs, identity=identity)
    with pytest.raises(BuildError, match=r"--remote grpc://127.0.0.1:9: worker worker-7 returned \d outputs that are "
                                         r"not the 1 this step makes"):
        build(tmp_path, STEP, materialize=False)


def test_remote_steps_take_no_local_job_slot(tmp_path, farm):
    """With ``--jobs 1``, three independent steps are on the farm at once (each waits for the others)."""
    succeeded(farm, (L1,))
    farm.gate = threading.Barrier(3, timeout=10)
    steps = [b.scratch().with_meta(f"RUN {n}").run(["sh", "-c", f"make {n}"]) for n in range(3)]
    _, events = build(tmp_path, steps[0].merge(steps[1:]), jobs=1, materialize=False)
    farmed = sorted(e.description for e in events.of("finished") if e.text == "on worker-7")
    assert farmed == ["RUN 0", "RUN 1", "RUN 2"]


def test_every_exec_on_the_farm_needs_no_local_runtime(tmp_path, farm):
    """The executor here has no runtime (``ready`` raises): the build never asks it for one."""
    farm.answer = failed(5, b"", b"")
    fake = FakeExecutor(missing=RuntimeNotFound("no OCI runtime: install runc or crun"))
    with pytest.raises(BuildError, match="exit code 5"):
        build(tmp_path, STEP, executor=fake)
    assert not fake.warmed and fake.runs == [] and len(farm.executed) == 1


def test_a_secret_step_runs_here_and_says_why(tmp_path, farm):
    step = b.scratch().with_meta("RUN use").run(["echo", "used"], mounts=[b.secret("tok", "/run/secrets/tok")])
    fake, events = build(tmp_path, step, secrets={"tok": SECRET})
    assert farm.executed == [] and len(fake.runs) == 1
    assert any("runs on this machine, not the build farm: it mounts a secret at /run/secrets/tok" in e.text
               for e in events.of("info")), [e.text for e in events.of("info")]


def test_an_unreachable_server_stops_the_build_before_anything_runs(tmp_path, farm):
    farm.reachable = False
    with pytest.raises(SolveError, match=r"^--remote: REAPI server grpc://127.0.0.1:9: cannot reach it"):
        build(tmp_path, STEP)
    assert farm.executed == []
