"""The solver end to end: real runc on real overlay snapshots, a busybox base from an OCI layout grant."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from backend.entitlements import Entitlements
from backend.errors import BuildError
from ir import builder as b
from ir import ops
from tests.e2e.conftest import Solving, read_file

pytestmark = pytest.mark.e2e


def sh(state: b.State, script: str, name: str = "", **kw) -> b.State:
    return state.with_meta(name or script).run(["sh", "-c", script], **kw)


def test_independent_stages_run_at_the_same_time(solving: Solving) -> None:
    base = solving.base()
    stages = [sh(base, f"sleep 2; echo {i} > /s{i}", f"stage {i}") for i in range(4)]
    final = stages[0].merge(stages[1:])
    res = solving.solve(final)
    spans = solving.last.spans()
    runs = [spans[e.op] for e in solving.last.of("finished") if e.description.startswith("stage")]
    assert len(runs) == 4
    assert max(start for start, _ in runs) < min(end for _, end in runs), "the four sleeps did not overlap"
    assert [read_file(res["default"], f"/s{i}") for i in range(4)] == [f"{i}\n".encode() for i in range(4)]


def test_second_solve_is_all_cache_hits(solving: Solving) -> None:
    (solving.context / "a.txt").write_text("A\n")
    s = sh(solving.base().copy(b.local("context"), "a.txt", "/a.txt"), "cat /a.txt > /b.txt", "cat")
    first = solving.solve(s)
    assert "cat" in solving.ran()
    second = solving.solve(s)
    assert solving.last.of("started") == [] and solving.ran() == []
    assert first["default"].identity == second["default"].identity
    assert read_file(second["default"], "/b.txt") == b"A\n"


def test_editing_one_context_file_reruns_only_what_reads_it(solving: Solving) -> None:
    ctx = b.local("context")
    (solving.context / "a.txt").write_text("A\n")
    (solving.context / "b.txt").write_text("B\n")
    base = solving.base()
    a = sh(base.copy(ctx, "a.txt", "/a.txt", meta=ops.OpMetadata("COPY a")), "cp /a.txt /a2", "RUN a")
    bb = sh(base.copy(ctx, "b.txt", "/b.txt", meta=ops.OpMetadata("COPY b")), "cp /b.txt /b2", "RUN b")
    target = {"a": a, "b": bb}
    solving.solve(target)
    assert sorted(solving.ran()) == ["COPY a", "COPY b", "RUN a", "RUN b"]
    (solving.context / "b.txt").write_text("B changed\n")
    res = solving.solve(target)
    assert sorted(solving.ran()) == ["COPY b", "RUN b"]
    assert read_file(res["b"], "/b2") == b"B changed\n"


def test_early_cutoff_when_a_rerun_produces_the_same_files(solving: Solving) -> None:
    src = solving.context / "prog.sh"
    src.write_text("# a comment\necho hello\n")
    base = solving.base()
    with_src = base.copy(b.local("context"), "prog.sh", "/src/prog.sh", meta=ops.OpMetadata("COPY prog.sh"),
                         create_dest_path=True)
    _, stripped = with_src.with_meta("strip comments").run_outputs(
        ["sh", "-c", "grep -v '^#' /src/prog.sh > /out/prog.sh"], mounts=[b.bind("/out", b.scratch(), readonly=False,
                                                                                    output=True)])
    app = base.copy(stripped, "/prog.sh", "/app/prog.sh", meta=ops.OpMetadata("COPY --from=strip"),
                     create_dest_path=True)
    app = sh(app, "sh /app/prog.sh > /app/out.txt", "run app")
    first = solving.solve(app)
    assert set(solving.ran()) == {"COPY prog.sh", "strip comments", "COPY --from=strip", "run app"}
    src.write_text("# another comment, edited\necho hello\n")
    second = solving.solve(app)
    assert solving.ran() == ["COPY prog.sh", "strip comments"]
    assert first["default"].identity == second["default"].identity
    assert read_file(second["default"], "/app/out.txt") == b"hello\n"


def test_cache_mount_persists_across_solves_and_stays_out_of_layers(solving: Solving) -> None:
    base = solving.base()
    cache = b.cache("/var/cache/app", id="app-cache")
    first = sh(base, "echo one >> /var/cache/app/log; cp /var/cache/app/log /seen", mounts=[cache])
    solving.solve(first)
    second = sh(base, "echo two >> /var/cache/app/log; cp /var/cache/app/log /seen2", mounts=[cache])
    res = solving.solve(second)
    assert read_file(res["default"], "/seen2") == b"one\ntwo\n"
    top = res["default"].layers[-1]
    assert not (top / "var" / "cache" / "app").exists()


def test_cache_mount_locked_sharing_serialises_users(solving: Solving) -> None:
    base = solving.base()
    cache = b.cache("/c", id="locked", sharing="locked")
    steps = [sh(base, f"echo start >> /c/log; sleep 1; echo end >> /c/log; echo {i} > /i", f"user {i}",
                mounts=[cache]) for i in range(2)]
    solving.solve(steps[0].merge(steps[1:]))
    check = sh(base, "cp /c/log /log", mounts=[cache])
    res = solving.solve(check)
    assert read_file(res["default"], "/log") == b"start\nend\nstart\nend\n"


def test_secret_is_readable_in_the_step_and_nowhere_else(solving: Solving) -> None:
    value = b"s3cr3t-" + os.urandom(8).hex().encode()
    base = solving.base()
    step = sh(base, 'wc -c < /run/secrets/token > /len; echo "$TOKEN_ENV" | wc -c > /envlen; '
                    'ls -ln /run/secrets/token | cut -c1-10 > /mode; echo leaked: $TOKEN_ENV',
              "use secret", mounts=[b.secret("token", mode=0o400), b.secret("token", "/unused", env="TOKEN_ENV")])
    res = solving.solve(step, secrets={"token": value})
    snap = res["default"]
    assert read_file(snap, "/len").strip() == str(len(value)).encode()
    assert read_file(snap, "/envlen").strip() == str(len(value) + 1).encode()
    assert read_file(snap, "/mode") == b"-r--------\n"
    assert "leaked: ****" in solving.logs()
    for e in solving.last.events:
        assert value.decode() not in e.text
    for dirpath, _, files in os.walk(solving.cache):
        for name in files:
            p = os.path.join(dirpath, name)
            if os.path.isfile(p) and not os.path.islink(p):
                assert value not in Path(p).read_bytes(), p
    assert not any(Path(layer, "run", "secrets").exists() for layer in snap.layers[1:])


def test_missing_required_secret_is_a_clear_error(solving: Solving) -> None:
    step = sh(solving.base(), "true", "needs secret", mounts=[b.secret("npmrc", required=True)])
    with pytest.raises(Exception, match="secret 'npmrc' is required.*--secret id=npmrc"):
        solving.solve(step)


def test_tmpfs_mount(solving: Solving) -> None:
    step = sh(solving.base(), "grep ' /scratch ' /proc/mounts | cut -d' ' -f3 > /fstype; echo x > /scratch/f",
              mounts=[b.tmpfs("/scratch", size=1 << 20)])
    res = solving.solve(step)
    assert read_file(res["default"], "/fstype") == b"tmpfs\n"
    assert not any(Path(layer, "scratch").exists() for layer in res["default"].layers[1:])


def test_bind_mounts_readonly_and_discarded_writes(solving: Solving) -> None:
    base = solving.base()
    data = base.mkfile("/data.txt", b"data\n")
    ro = sh(base, "cat /in/data.txt > /ro-read; (echo x > /in/new) 2>/dev/null && echo writable > /ro || "
                  "echo readonly > /ro", mounts=[b.bind("/in", data)])
    rw = sh(base, "echo x > /in/new && cat /in/new > /rw; echo changed > /in/data.txt",
            mounts=[b.bind("/in", data, readonly=False)])
    after = sh(data, "ls /new 2>/dev/null > /after || true; cp /data.txt /after2")
    res = solving.solve({"ro": ro, "rw": rw, "after": after})
    assert read_file(res["ro"], "/ro-read") == b"data\n"
    assert read_file(res["ro"], "/ro") == b"readonly\n"
    assert read_file(res["rw"], "/rw") == b"x\n"
    assert read_file(res["after"], "/after2") == b"data\n"


def test_network_none_has_only_loopback(solving: Solving) -> None:
    step = sh(solving.base(), "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > /ifaces").with_meta("")
    step = solving.base().with_network("none").run(["sh", "-c", "tail -n +3 /proc/net/dev | cut -d: -f1 | "
                                                                 "tr -d ' ' > /ifaces"])
    res = solving.solve(step)
    assert read_file(res["default"], "/ifaces") == b"lo\n"


def test_failing_step_reports_location_and_output_tail(solving: Solving) -> None:
    dockerfile = b"FROM busybox\nRUN echo fine\nRUN for i in $(seq 1 30); do echo line $i; done; exit 3\n"
    loc = ops.Location(file=0, line=3)
    step = solving.base().with_meta("[2/2] RUN for i ...", locations=[loc]).run(
        ["sh", "-c", "for i in $(seq 1 30); do echo line $i; done; exit 3"])
    with pytest.raises(BuildError) as info:
        solving.solve(step, sources=[ops.SourceFile("Dockerfile", "dockerfile", dockerfile)])
    text = str(info.value)
    assert "[2/2] RUN for i ...: process" in text and "exit code 3" in text
    assert "Dockerfile:3" in text
    assert ">>> RUN for i in $(seq 1 30)" in text
    assert "line 30" in text and "line 11" in text and "line 10\n" not in text
    assert info.value.exit_code == 3
    assert [e.description for e in solving.last.of("failed")] == ["[2/2] RUN for i ..."]


def test_failure_cancels_running_siblings(solving: Solving) -> None:
    base = solving.base()
    slow = sh(base, "sleep 30", "slow")
    bad = sh(base, "sleep 0.5; exit 1", "bad")
    import time

    t0 = time.monotonic()
    with pytest.raises(BuildError, match="bad"):
        solving.solve(slow.merge([bad]))
    assert time.monotonic() - t0 < 15


def test_two_solves_at_once_share_one_store(solving: Solving) -> None:
    base = solving.base()
    graphs = [sh(base, f"sleep 1; echo {i} > /f", f"build {i}") for i in range(2)]
    shared = sh(base, "echo shared > /shared", "shared")
    results: dict[int, object] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            from backend.solve.solver import solve

            doc = b.build_document({"default": graphs[i].merge([shared])})
            results[i] = solve(doc, ["default"], solving.options())
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert [read_file(results[i]["default"], "/f") for i in range(2)] == [b"0\n", b"1\n"]


def test_user_and_workdir(solving: Solving) -> None:
    step = solving.base().with_user("nobody").with_cwd("/work/dir").run(["sh", "-c", "id -u > /tmp/uid; pwd > /tmp/pwd"])
    res = solving.solve(step)
    assert read_file(res["default"], "/tmp/uid") == b"65534\n"
    assert read_file(res["default"], "/tmp/pwd") == b"/work/dir\n"


def test_file_ops_merge_diff_and_image(solving: Solving) -> None:
    base = solving.base()
    f = base.mkdir("/app").mkfile("/app/hello", b"hi\n").symlink("hello", "/app/link")
    d = base.diff(f)
    linked = base.copy(b.local("context"), "/", "/ctx/", link=True)
    img = f.with_image(ops.ImageConfig(cmd=("/bin/sh",), env=("A=1",)))
    (solving.context / "c.txt").write_text("C\n")
    res = solving.solve({"diff": d, "img": img, "linked": linked})
    assert len(res["diff"].layers) == 3  # mkdir, mkfile, symlink: the layers above the base
    assert read_file(res["diff"], "/app/hello") == b"hi\n"
    assert res["img"].image is not None and res["img"].image.config == {"Cmd": ["/bin/sh"], "Env": ["A=1"]}
    assert read_file(res["linked"], "/ctx/c.txt") == b"C\n"


def test_early_cutoff_across_stages_copy_from(solving: Solving) -> None:
    """Dockerfile-shaped: a build stage strips comments; the app stage copies its output.  Editing only
    a comment re-runs the build stage, but COPY --from and everything after it stay cached."""
    src = solving.context / "prog.sh"
    src.write_text("# v1\necho hello\n")
    base = solving.base()
    build = base.copy(b.local("context"), "prog.sh", "/src/", meta=ops.OpMetadata("build: COPY"),
                      create_dest_path=True)
    build = sh(build, "grep -v '^#' /src/prog.sh > /stripped.sh", "build: strip")
    app = base.copy(build, "/stripped.sh", "/app/", meta=ops.OpMetadata("app: COPY --from=build"),
                    create_dest_path=True)
    app = sh(app, "sh /app/stripped.sh > /app/out", "app: run")
    solving.solve(app)
    assert len(solving.ran()) == 4
    src.write_text("# v2, only the comment changed\necho hello\n")
    res = solving.solve(app)
    assert solving.ran() == ["build: COPY", "build: strip"]
    assert read_file(res["default"], "/app/out") == b"hello\n"
    src.write_text("echo changed\n")
    res = solving.solve(app)
    assert solving.ran() == ["build: COPY", "build: strip", "app: COPY --from=build", "app: run"]
    assert read_file(res["default"], "/app/out") == b"changed\n"


def test_security_insecure_only_when_allowed(solving: Solving) -> None:
    script = "mkdir -p /m && mount -t tmpfs none /m && echo mounted > /r; grep CapEff /proc/self/status > /caps"
    step = solving.base().run(["sh", "-c", script], security="insecure")
    from backend.errors import GrantError

    with pytest.raises(GrantError, match="--allow security.insecure"):
        solving.solve(step)
    res = solving.solve(step, entitlements=Entitlements(insecure=True))
    assert read_file(res["default"], "/r") == b"mounted\n"
    sandboxed = sh(solving.base(), "grep CapEff /proc/self/status > /caps")
    caps = {k: int(read_file(r["default"], "/caps").split()[1], 16)
            for k, r in (("insecure", res), ("sandbox", solving.solve(sandboxed)))}
    assert caps["insecure"] & (1 << 21) and not caps["sandbox"] & (1 << 21)  # CAP_SYS_ADMIN


def test_cache_mount_seeded_from_its_input_with_owner_and_mode(solving: Solving) -> None:
    base = solving.base()
    seed = b.scratch().mkdir("/deps", parents=True).mkfile("/deps/seeded.txt", b"from the seed\n")
    cache = b.cache("/cache", id="seeded", seed=seed, selector="deps", uid=65534, gid=65534, mode=0o750)
    step = sh(base, "cat /cache/seeded.txt > /got; stat -c '%u:%g %a' /cache > /meta", mounts=[cache])
    res = solving.solve(step)
    assert read_file(res["default"], "/got") == b"from the seed\n"
    assert read_file(res["default"], "/meta") == b"65534:65534 750\n"


def test_bind_selector_mounts_a_sub_path(solving: Solving) -> None:
    data = b.scratch().mkdir("/a/b", parents=True).mkfile("/a/b/f", b"deep\n")
    step = sh(solving.base(), "cat /in/f > /got", mounts=[b.bind("/in", data, selector="/a/b")])
    res = solving.solve(step)
    assert read_file(res["default"], "/got") == b"deep\n"
