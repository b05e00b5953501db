"""The solver's logic with exec steps, on the in-process executor (``tests/support/fake_executor.py``).

No root, no runc, no overlay: the copy snapshotter and a fake that "runs" a tiny script language, so
these run for any user.  What they cover is the solver's, not the runtime's: cache hits and misses,
early cutoff, the job limit, errors and cancellation, what each kind of mount becomes, and grants.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from backend.errors import BuildError, GrantError
from backend.events import Recorder
from backend.runtime.finder import RuntimeNotFound
from backend.solve.solver import SolveOptions, solve
from ir import builder as b
from ir import ops
from tests.support.fake_executor import FakeExecutor

ME = {"uid": os.getuid(), "gid": os.getgid()}  # a cache or secret owned by us: no chown needed
MINE = ops.Owner(str(os.getuid()), str(os.getgid()))  # likewise for files a file op makes


@pytest.fixture(autouse=True)
def copy_snapshotter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRCTL_SNAPSHOTTER", "copy")


class Build:
    """Solves graphs with one store and one fake executor, and says which steps ran."""

    def __init__(self, tmp_path: Path, fake: FakeExecutor | None = None, **options) -> None:
        self.fake = fake or FakeExecutor()
        self.options = SolveOptions(cache_dir=tmp_path / "cache", executor=self.fake, **options)
        self.events = Recorder()
        self.options.on_event = self.events

    def __call__(self, **targets: b.State) -> dict:
        self.events.events.clear()
        return solve(b.build_document(targets), list(targets), self.options)

    def ran(self) -> list[str]:
        return [e.description for e in self.events.of("finished")]


def run(state: b.State, name: str, *script: str, **kw) -> b.State:
    return state.with_meta(name).run(script, **kw)


def files(snap) -> dict[str, str]:
    """Path -> text of every file in a snapshot's layers (later layers win)."""
    out: dict[str, str] = {}
    for layer in snap.layers:
        for dirpath, _, names in os.walk(layer):
            for n in names:
                p = Path(dirpath, n)
                if p.is_file():
                    out["/" + str(p.relative_to(layer))] = p.read_text()
    return out


# ------------------------------------------------------------------------------------------- keys and hits


def test_a_step_runs_once_and_a_rebuild_is_a_cache_hit(tmp_path: Path) -> None:
    build = Build(tmp_path)
    step = run(b.scratch(), "RUN write", "write", "/out.txt", "hello")
    first = build(default=step)["default"]
    assert build.ran() == ["RUN write"] and len(build.fake.runs) == 1
    assert files(first) == {"/out.txt": "hello\n"}
    second = build(default=step)["default"]
    assert build.ran() == [] and len(build.fake.runs) == 1 and second.identity == first.identity
    build.options.no_cache = True
    build(default=step)
    assert build.ran() == ["RUN write"] and len(build.fake.runs) == 2


def test_a_step_that_rebuilds_the_same_files_cuts_off_what_follows(tmp_path: Path) -> None:
    build = Build(tmp_path)

    def graph(version: str) -> b.State:
        base = b.scratch().with_meta("version").mkfile("/version", version.encode(), owner=MINE)
        made = run(base, "RUN make", "write", "/out/app", "binary")
        return run(b.scratch(), "RUN use", "cat", "/src/app", mounts=[b.bind("/src", made, selector="/out")])

    build(default=graph("1"))
    assert build.ran() == ["version", "RUN make", "RUN use"]
    build(default=graph("2"))  # the make step re-runs, makes the same /out: the bind's selection is unchanged
    assert build.ran() == ["version", "RUN make"]


def test_the_network_option_is_part_of_a_default_network_steps_key(tmp_path: Path) -> None:
    build = Build(tmp_path)
    step = run(b.scratch(), "RUN net", "echo", "hi")
    build(default=step)
    build.options.network = "none"
    build(default=step)
    assert build.ran() == ["RUN net"] and [r.network for r in build.fake.runs] == ["default", "none"]


# ------------------------------------------------------------------------------------------- parallelism


def test_independent_steps_run_at_once_up_to_the_job_limit(tmp_path: Path) -> None:
    steps = {f"s{i}": run(b.scratch(), f"RUN {i}", "sleep", "0.3", "&&", "write", f"/{i}", "x") for i in range(3)}
    wide = Build(tmp_path / "wide", jobs=3)
    wide(**steps)
    assert wide.fake.max_running == 3
    narrow = Build(tmp_path / "narrow", jobs=1)
    narrow(**steps)
    assert narrow.fake.max_running == 1 and len(narrow.fake.runs) == 3


def test_a_step_starts_only_after_its_inputs(tmp_path: Path) -> None:
    build = Build(tmp_path)
    first = run(b.scratch(), "RUN first", "sleep", "0.2", "&&", "write", "/a", "1")
    build(default=run(first, "RUN second", "cat", "/a"))
    one, two = build.fake.runs
    assert two.started >= one.ended


# ------------------------------------------------------------------------------------------- errors


def test_a_failing_step_is_one_located_error_and_cancels_its_siblings(tmp_path: Path) -> None:
    build = Build(tmp_path)
    bad = run(b.scratch(), "RUN bad", "echo", "compiling", "&&", "exit", "3")
    slow = run(b.scratch(), "RUN slow", "sleep", "30")
    started = time.monotonic()
    with pytest.raises(BuildError) as caught:
        build(bad=bad, slow=slow)
    assert time.monotonic() - started < 10  # the sleeping sibling was cancelled, not waited for
    e = caught.value
    assert e.description == "RUN bad" and e.exit_code == 3
    assert e.message == "process 'exit 3' did not complete successfully: exit code 3".replace(
        "'exit 3'", repr("echo compiling && exit 3"))
    assert e.output_tail == ("compiling",)
    assert [ev.description for ev in build.events.of("failed")] == ["RUN bad"]


def test_a_missing_runtime_is_reported_by_the_step_that_needs_it(tmp_path: Path) -> None:
    build = Build(tmp_path, FakeExecutor(missing=RuntimeNotFound("no OCI runtime: install runc or crun")))
    build(default=b.scratch().with_meta("mkdir").mkdir("/d", owner=MINE))  # no process: the runtime is never asked for
    with pytest.raises(BuildError, match="RuntimeNotFound: no OCI runtime") as caught:
        build(default=run(b.scratch(), "RUN x", "echo"))
    assert caught.value.description == "RUN x" and build.fake.runs == []


def test_a_required_secret_or_agent_missing_is_refused_before_anything_runs(tmp_path: Path) -> None:
    build = Build(tmp_path)
    first = run(b.scratch(), "RUN first", "echo", "hi")
    step = run(first, "RUN deploy", "cat", "/run/secrets/token",
               mounts=[b.secret("token", required=True), b.ssh(id="deploy", required=True)])
    with pytest.raises(GrantError) as caught:
        build(default=step)
    assert str(caught.value).splitlines() == [
        "RUN deploy: secret 'token' is required but was not given (pass --secret id=token,src=FILE or env=VAR)",
        "RUN deploy: ssh agent 'deploy' is required but was not given "
        "(pass --ssh deploy=SOCKET, or --ssh default with $SSH_AUTH_SOCK set)"]
    assert build.fake.runs == [] and not (tmp_path / "cache").exists()


# ------------------------------------------------------------------------------------------- mounts


def test_a_cache_mount_outlives_the_build_and_is_not_part_of_the_key(tmp_path: Path) -> None:
    build = Build(tmp_path)
    fill = run(b.scratch(), "RUN fill", "write", "/var/cache/pkgs", "downloaded",
               mounts=[b.cache("/var/cache", sharing="locked", **ME)])
    build(default=fill)
    read = run(b.scratch(), "RUN read", "cat", "/c/pkgs", mounts=[b.cache("/c", id="/var/cache", **ME)])
    build(default=read)
    assert build.events.of("log")[-1].text == "downloaded"
    assert files(build(default=fill)["default"]) == {}  # cached, and the cache's files are not in the layer


def test_tmpfs_and_readonly_binds_leave_nothing_in_the_layer(tmp_path: Path) -> None:
    build = Build(tmp_path)
    src = b.scratch().with_meta("src").mkfile("/f", b"data", owner=MINE)
    step = run(b.scratch(), "RUN scratchpad", "write", "/tmp/x", "gone", "&&", "cat", "/src/f", "&&",
               "write", "/kept", "yes", mounts=[b.tmpfs("/tmp"), b.bind("/src", src)])
    snap = build(default=step)["default"]
    assert files(snap) == {"/kept": "yes\n"}  # neither the tmpfs's file nor a mount stub
    assert not any(p.name in ("tmp", "src") for layer in snap.layers for p in layer.iterdir())
    with pytest.raises(BuildError, match="exit code 1") as caught:
        build(default=run(b.scratch(), "RUN write ro", "write", "/src/f", "x", mounts=[b.bind("/src", src)]))
    assert caught.value.output_tail == ("write: /src/f: Read-only file system",)


def test_an_output_mount_becomes_an_output_of_its_own(tmp_path: Path) -> None:
    build = Build(tmp_path)
    dest = b.scratch().with_meta("dest").mkdir("/d", owner=MINE)
    root, out = b.scratch().with_meta("RUN out").run_outputs(
        ["write", "/o/d/made", "here", "&&", "write", "/root", "r"], mounts=[b.bind("/o", dest, readonly=False,
                                                                               output=True)])
    found = build(root=root, out=out)
    assert files(found["root"]) == {"/root": "r\n"} and files(found["out"]) == {"/d/made": "here\n"}


def test_secrets_reach_the_step_and_never_its_log(tmp_path: Path) -> None:
    build = Build(tmp_path, secrets={"token": b"s3cr3t-value"})
    step = run(b.scratch(), "RUN secret", "cat", "/run/secrets/token", "&&", "env",
               mounts=[b.secret("token", **ME), b.secret("token", target="/t", env="TOKEN")])
    build(default=step)
    (the_run,) = build.fake.runs
    assert "TOKEN=s3cr3t-value" in the_run.env  # the process got it ...
    logs = [e.text for e in build.events.of("log")]
    assert logs and not any("s3cr3t" in line for line in logs)  # ... its output never shows it
    assert "/run/secrets/token" in the_run.mounts


def test_the_executor_is_warmed_and_closed_once_per_build_with_processes(tmp_path: Path) -> None:
    build = Build(tmp_path)
    build(default=b.scratch().with_meta("mkdir").mkdir("/d", owner=MINE))
    assert not build.fake.warmed and build.fake.closed
    build(default=run(b.scratch(), "RUN x", "echo"))
    assert build.fake.warmed


def test_every_ir_op_kind_has_exactly_one_handler() -> None:
    from backend.ops.registry import HANDLERS

    assert sorted(HANDLERS) == sorted(ops.OP_KINDS)
    assert all(h.kind == kind for kind, h in HANDLERS.items())
