"""The execution layer end to end: real runc (or crun) on real overlay snapshots of a busybox root.

Also USER resolution (backend.fs.userdb), which needs no runtime."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from backend.fs.mountpoints import remove_mount_stubs
from backend.runtime.spec import DEFAULT_CAPABILITIES, PIDS_LIMIT
from backend.runtime.container import Cancelled, reap_stale_containers, run, run_on_layers
from backend.runtime.finder import RuntimeNotFound, find_runtime
from backend.runtime.spec import (BindMount, ContainerStartError, FileMount, Process, TmpfsMount, config_for,
                                  mount_targets)
from backend.fs.layerformat import is_opaque, is_whiteout
from backend.snapshot.copydiff import CopySnapshotter
from backend.snapshot.layertree import apply_layers, layer_tree_digest
from backend.snapshot.overlay import OverlaySnapshotter
from backend.fs.userdb import UserError, resolve_user
from tests.support import pids_with

PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Result:
    code: int
    output: str
    upper: Path


def sh(script: str, **kw) -> Process:
    return Process(args=["sh", "-c", script], env=kw.pop("env", [PATH, "HOME=/root"]), **kw)


def execute(lowers: list[Path], tmp: Path, process: Process, mounts=(), *, network: str = "none",
            snapshotter=OverlaySnapshotter, name: str = "run", cancel: threading.Event | None = None,
            clean_stubs: bool = True) -> Result:
    upper = tmp / f"{name}-upper"
    upper.mkdir()
    chunks: list[bytes] = []
    kw = dict(network=network, hostname="buildbox", output=chunks.append, state_dir=tmp / "state", cancel=cancel)
    if clean_stubs:
        code = run_on_layers(snapshotter(), lowers, upper, tmp / f"{name}-work", process, mounts, **kw)
    else:
        with snapshotter().mounted(lowers, upper, tmp / f"{name}-work") as root:
            code = run(root, process, mounts, **kw)
    return Result(code, b"".join(chunks).decode(errors="replace"), upper)


def state_is_clean(state: Path) -> bool:
    """No container known to the runtime, no runtime state dir, no bundle left under `state`."""
    listed = subprocess.run(find_runtime().command(state, "list", "--format", "json"), capture_output=True,
                            text=True)
    leftovers = [p.name for p in state.iterdir() if p.name != "bundles"]
    return json.loads(listed.stdout or "null") in (None, []) and not leftovers and not list(
        (state / "bundles").iterdir())


def layer(upper: Path) -> set[str]:
    return {str(p.relative_to(upper)) for p in upper.rglob("*")}



# ---------------------------------------------------------------------------------------------- processes

@pytest.mark.e2e
def test_echo_and_exit_codes(busybox_rootfs: Path, tmp_path: Path) -> None:
    r = execute([busybox_rootfs], tmp_path, sh("echo hello from the box; echo to stderr >&2"))
    assert r.code == 0
    assert r.output == "hello from the box\nto stderr\n"
    assert execute([busybox_rootfs], tmp_path, sh("exit 42"), name="b").code == 42
    with pytest.raises(ContainerStartError, match=r"/no/such/binary.*(?i:no such file)"):
        execute([busybox_rootfs], tmp_path, Process(["/no/such/binary"], env=[PATH]), name="d")


@pytest.mark.e2e
def test_stdout_and_stderr_keep_their_order(busybox_rootfs: Path, tmp_path: Path) -> None:
    r = execute([busybox_rootfs], tmp_path, sh("for i in 1 2 3 4 5 6 7 8; do echo out$i; echo err$i >&2; done"))
    assert r.output.split() == [f"{s}{i}" for i in range(1, 9) for s in ("out", "err")]


@pytest.mark.e2e
def test_env_argv_cwd_exactly_as_given(busybox_rootfs: Path, tmp_path: Path) -> None:
    env = [PATH, "HOME=/root", "EMPTY=", "SPACES=a  b", "QUOTE='\"$x", "DUP=1"]
    r = execute([busybox_rootfs], tmp_path, Process(["env"], env=env, cwd="/"))
    assert r.output.splitlines() == env
    r = execute([busybox_rootfs], tmp_path, Process(["/bin/busybox", "echo", "a  b", "$HOME", "*", ""],
                                                    env=[PATH], cwd="/etc"), name="argv")
    assert r.output == "a  b $HOME * \n"
    r = execute([busybox_rootfs], tmp_path, sh("pwd", cwd="/etc"), name="cwd")
    assert r.output == "/etc\n"


@pytest.mark.e2e
def test_missing_workdir_is_created_owned_by_the_user_and_kept(busybox_rootfs: Path, tmp_path: Path) -> None:
    r = execute([busybox_rootfs], tmp_path, sh("pwd; id -u; touch mine", cwd="/srv/app/work", uid=1000, gid=1001))
    assert r.code == 0, r.output
    assert r.output == "/srv/app/work\n1000\n"
    st = os.stat(r.upper / "srv/app/work")
    assert (st.st_uid, st.st_gid) == (1000, 1001)
    assert layer(r.upper) == {"srv", "srv/app", "srv/app/work", "srv/app/work/mine"}


@pytest.mark.e2e
def test_user_and_groups(busybox_rootfs: Path, tmp_path: Path) -> None:
    r = execute([busybox_rootfs], tmp_path, sh("id -u; id -g; id -G; grep -E '^Cap(Eff|Bnd)' /proc/self/status",
                                               uid=1000, gid=1000, additional_gids=[1000, 5, 20]))
    lines = r.output.splitlines()
    assert lines[:2] == ["1000", "1000"]
    assert sorted(lines[2].split()) == ["1000", "20", "5"]
    assert lines[3].split() == ["CapEff:", "0000000000000000"]  # non-root: no effective capabilities
    r = execute([busybox_rootfs], tmp_path, sh("grep CapEff /proc/self/status"), name="root")
    assert r.output.split() == ["CapEff:", "00000000a80405fb"]  # Docker's default set without CAP_NET_RAW
    assert len(DEFAULT_CAPABILITIES) == 13


@pytest.mark.e2e
def test_privileged_runs_get_every_capability_and_unmasked_proc(busybox_rootfs: Path, tmp_path: Path) -> None:
    chunks: list[bytes] = []
    upper = tmp_path / "upper"
    with OverlaySnapshotter().mounted([busybox_rootfs], upper, tmp_path / "work") as root:
        run(root, sh("grep CapEff /proc/self/status; grep -c ' /proc/keys ' /proc/mounts"), network="none",
            hostname="x", output=chunks.append, state_dir=tmp_path / "state", privileged=True)
    host_bnd = next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
                    if line.startswith("CapBnd:"))
    assert b"".join(chunks).decode().split() == ["CapEff:", host_bnd, "0"]


@pytest.mark.e2e
def test_hostname_hosts_resolv_and_rlimits(busybox_rootfs: Path, tmp_path: Path) -> None:
    r = execute([busybox_rootfs], tmp_path, sh("hostname; cat /etc/hosts; cat /etc/resolv.conf; ulimit -n; "
                                               "echo nofile=$(ulimit -n); touch /sys/x 2>/dev/null || echo sys-ro"))
    lines = r.output.splitlines()
    assert lines[0] == "buildbox"
    assert "127.0.0.1\tlocalhost" in lines and "127.0.1.1\tbuildbox" in lines
    host_resolv = Path("/etc/resolv.conf").read_text() if Path("/etc/resolv.conf").exists() else ""
    assert host_resolv in r.output
    import resource
    assert 0 < int(lines[-2].removeprefix("nofile=")) <= resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert lines[-1] == "sys-ro"


@pytest.mark.e2e
def test_network_none_has_only_loopback_and_it_is_up(busybox_rootfs: Path, tmp_path: Path) -> None:
    r = execute([busybox_rootfs], tmp_path, sh("cat /proc/net/dev; cat /sys/class/net/lo/flags"))
    ifaces = [line.split(":")[0].strip() for line in r.output.splitlines()[2:] if ":" in line]
    assert ifaces == ["lo"]
    assert int(r.output.splitlines()[-1], 16) & 0x1  # IFF_UP


@pytest.mark.e2e
def test_host_network_sees_the_host_interfaces(busybox_rootfs: Path, tmp_path: Path) -> None:
    host = {line.split(":")[0].strip() for line in Path("/proc/net/dev").read_text().splitlines()[2:]}
    r = execute([busybox_rootfs], tmp_path, sh("cat /proc/net/dev"), network="host")
    inside = {line.split(":")[0].strip() for line in r.output.splitlines()[2:] if ":" in line}
    assert inside == host
    r = execute([busybox_rootfs], tmp_path, sh("cat /proc/net/dev"), network="default", name="default")
    assert {line.split(":")[0].strip() for line in r.output.splitlines()[2:] if ":" in line} == {"lo", "tap0"}


# ---------------------------------------------------------------------------------------------- mounts and layers

@pytest.mark.e2e
def test_file_writes_deletes_and_replaced_dirs_land_in_the_layer(busybox_rootfs: Path, tmp_path: Path) -> None:
    r = execute([busybox_rootfs], tmp_path, sh("echo data > /tmp/new; rm /etc/group; "
                                               "rm -rf /root && mkdir /root && touch /root/fresh"))
    assert r.code == 0, r.output
    assert (r.upper / "tmp/new").read_text() == "data\n"
    assert is_whiteout(os.lstat(r.upper / "etc/group"))
    assert is_opaque(r.upper / "root") and (r.upper / "root/fresh").exists()
    assert layer(r.upper) == {"tmp", "tmp/new", "etc", "etc/group", "root", "root/fresh"}


@pytest.mark.e2e
def test_mount_points_created_only_for_mounting_are_not_in_the_layer(busybox_rootfs: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    mounts = [BindMount(src, "/mnt/deep/src"), TmpfsMount("/cache/tmp", size=1 << 20),
              FileMount(secret, "/run/secrets/token")]
    r = execute([busybox_rootfs], tmp_path, sh("cat /run/secrets/token; echo; ls -d /proc /dev /sys /mnt/deep/src"),
                mounts, clean_stubs=False)
    assert r.output.startswith("s3cret\n")
    stubs = {"proc", "dev", "sys", "etc/hosts", "etc/resolv.conf", "mnt/deep/src", "cache/tmp", "run/secrets/token"}
    assert stubs <= layer(r.upper)  # what runc leaves in the upper dir ...
    remove_mount_stubs(r.upper, [busybox_rootfs], mount_targets(mounts))
    assert layer(r.upper) == set()  # ... and none of it, nor the parents made for it, stays in the layer


@pytest.mark.e2e
def test_created_workdir_stays_even_when_mounted_over(busybox_rootfs: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    r = execute([busybox_rootfs], tmp_path, sh("pwd", cwd="/app"), [BindMount(src, "/app")])
    assert r.output == "/app\n"
    assert layer(r.upper) == {"app"}


@pytest.mark.e2e
def test_image_hosts_and_resolv_conf_are_not_touched(busybox_rootfs: Path, tmp_path: Path) -> None:
    image = tmp_path / "image-layer"
    (image / "etc").mkdir(parents=True)
    (image / "etc/hosts").write_text("10.0.0.1 image-host\n")
    (image / "etc/resolv.conf").write_text("nameserver 10.9.9.9\n")
    r = execute([busybox_rootfs, image], tmp_path, sh("cat /etc/hosts /etc/resolv.conf"))
    assert "buildbox" in r.output and "image-host" not in r.output and "10.9.9.9" not in r.output
    assert layer(r.upper) == set()
    assert (image / "etc/hosts").read_text() == "10.0.0.1 image-host\n"


@pytest.mark.e2e
def test_bind_mounts_readonly_and_readwrite(busybox_rootfs: Path, tmp_path: Path) -> None:
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "in").write_text("input")
    r = execute([busybox_rootfs], tmp_path, sh("cat /ro/in; echo; echo x > /ro/out && echo WROTE || echo refused; "
                                               "echo y > /rw/out && echo ok"),
                [BindMount(ro, "/ro"), BindMount(rw, "/rw", readonly=False)])
    assert r.output.splitlines()[0] == "input"
    assert "refused" in r.output and "WROTE" not in r.output and r.output.endswith("ok\n")
    assert not (ro / "out").exists()
    assert (rw / "out").read_text() == "y\n"  # a rw bind writes through to its source ...
    assert layer(r.upper) == set()  # ... never into the layer


@pytest.mark.e2e
def test_rw_bind_of_a_throwaway_snapshot_discards_writes(busybox_rootfs: Path, tmp_path: Path) -> None:
    """RUN --mount=type=bind,rw: the exec op binds an overlay of the source with a scratch upper."""
    source = tmp_path / "context"
    source.mkdir()
    (source / "in").write_text("ctx")
    scratch = tmp_path / "scratch-upper"
    scratch.mkdir()
    with OverlaySnapshotter().mounted([source], scratch, tmp_path / "scratch-work") as view:
        r = execute([busybox_rootfs], tmp_path, sh("cat /src/in; echo; echo w > /src/in && rm -f /src/in && "
                                                   "echo new > /src/new && echo ok"),
                    [BindMount(view, "/src", readonly=False)])
    assert r.output == "ctx\nok\n"
    assert sorted(p.name for p in source.iterdir()) == ["in"] and (source / "in").read_text() == "ctx"
    assert layer(r.upper) == set()


@pytest.mark.e2e
def test_nested_mounts_are_mounted_parents_first(busybox_rootfs: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "cache").mkdir(parents=True)
    r = execute([busybox_rootfs], tmp_path, sh("echo c > /w/src/cache/f && grep -c ' /w/src' /proc/mounts"),
                [TmpfsMount("/w/src/cache"), BindMount(src, "/w/src", readonly=False)])  # child listed first
    assert r.code == 0, r.output
    assert r.output == "2\n"
    assert list((src / "cache").iterdir()) == []  # the tmpfs, not the bind source, got the write
    assert layer(r.upper) == set()


@pytest.mark.e2e
def test_tmpfs_contents_never_reach_the_layer(busybox_rootfs: Path, tmp_path: Path) -> None:
    r = execute([busybox_rootfs], tmp_path, sh("echo t > /tmp/scratch/file; df /tmp/scratch | tail -1"),
                [TmpfsMount("/tmp/scratch", size=4 << 20)])
    assert r.code == 0 and "tmpfs" in r.output
    assert layer(r.upper) == set()


@pytest.mark.e2e
def test_copy_snapshotter_gives_the_same_layer_as_overlay(busybox_rootfs: Path, tmp_path: Path) -> None:
    script = ("echo a > /tmp/a; mkdir -p /opt/x/y; ln -s /bin/busybox /opt/x/y/bb; chmod 700 /opt/x; "
              "chown 1000:1000 /opt/x/y; rm /etc/passwd; rm -rf /root && mkdir /root && echo r > /root/r; "
              "rm /bin/ls; mkfifo /tmp/fifo; echo more >> /etc/group")
    digests = {}
    for snap in (OverlaySnapshotter, CopySnapshotter):
        r = execute([busybox_rootfs], tmp_path, sh(script), snapshotter=snap, name=snap.name)
        assert r.code == 0, r.output
        digests[snap.name] = (layer_tree_digest(r.upper), sorted(layer(r.upper)))
    assert digests["copy"] == digests["overlay"]


# ---------------------------------------------------------------------------------------------- lifecycle

def _mountinfo() -> str:
    return Path("/proc/self/mountinfo").read_text()


@pytest.mark.e2e
def test_cancel_kills_the_container_and_leaves_nothing(busybox_rootfs: Path, tmp_path: Path) -> None:
    marker = "irctl-cancel-test-4242"
    cancel = threading.Event()
    seen = threading.Event()
    upper = tmp_path / "upper"
    upper.mkdir()
    state = tmp_path / "state"
    outcome: list[BaseException | int] = []

    def output(chunk: bytes) -> None:
        if b"started" in chunk:
            seen.set()

    def target() -> None:
        try:
            with OverlaySnapshotter().mounted([busybox_rootfs], upper, tmp_path / "work") as root:
                outcome.append(root)  # type: ignore[arg-type]
                outcome.append(run(root, sh(f": {marker}; echo started; sleep 1000; echo never"), network="none",
                                   hostname="x", output=output, state_dir=state, cancel=cancel))
        except BaseException as e:  # noqa: BLE001
            outcome.append(e)

    t = threading.Thread(target=target)
    t.start()
    assert seen.wait(30), "container did not start"
    assert pids_with(marker)
    started = time.monotonic()
    cancel.set()
    t.join(30)
    assert not t.is_alive() and time.monotonic() - started < 15
    root, result = outcome
    assert isinstance(result, Cancelled)
    assert not pids_with(marker)
    assert str(root) not in _mountinfo()
    assert state_is_clean(state)


@pytest.mark.e2e
def test_cancel_before_start_and_failing_output_callback_leave_nothing(busybox_rootfs: Path, tmp_path: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        execute([busybox_rootfs], tmp_path, sh("echo never; sleep 100"), cancel=cancel)

    def explode(chunk: bytes) -> None:
        raise BrokenPipeError("log sink closed")

    upper = tmp_path / "upper"
    upper.mkdir()
    started = time.monotonic()
    with pytest.raises(BrokenPipeError):
        with OverlaySnapshotter().mounted([busybox_rootfs], upper, tmp_path / "work") as root:
            run(root, sh("echo boom; sleep 100"), network="none", hostname="x", output=explode,
                state_dir=tmp_path / "state")
    assert time.monotonic() - started < 15
    assert state_is_clean(tmp_path / "state")


@pytest.mark.e2e
def test_runtime_detection(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    detected = find_runtime()
    assert detected.name in ("runc", "crun") and os.access(detected.path, os.X_OK)
    if _cgroup_hybrid():
        assert detected.name == "runc", "crun refuses hybrid cgroup v1+v2 hosts: the probe must notice"
    monkeypatch.setenv("IRCTL_RUNTIME", "runc")
    assert find_runtime().name == "runc"
    monkeypatch.setenv("IRCTL_RUNTIME", "/nonexistent/crun")
    with pytest.raises(RuntimeNotFound, match="IRCTL_RUNTIME"):
        find_runtime()
    monkeypatch.delenv("IRCTL_RUNTIME")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeNotFound, match="install runc"):
        find_runtime()


@pytest.mark.e2e
def test_crun_probe_is_remembered_per_binary_and_boot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import shutil as _shutil

    import backend.runtime.finder as runtime

    crun = _shutil.which("crun")
    if crun is None:
        pytest.skip("no crun here")
    monkeypatch.delenv("IRCTL_RUNTIME", raising=False)
    probes = []
    real = runtime._crun_works.__wrapped__
    monkeypatch.setattr(runtime, "_crun_works", lambda path: probes.append(path) or real(path))
    memo = tmp_path / "runtime.probe"
    first = find_runtime(memo=memo, scratch=tmp_path)
    assert probes == [crun] and memo.read_text().endswith(("\nyes", "\nno"))
    assert find_runtime(memo=memo, scratch=tmp_path) == first and len(probes) == 1  # remembered
    memo.write_text(memo.read_text().replace(crun, crun + "-another-binary"))
    assert find_runtime(memo=memo, scratch=tmp_path) == first and len(probes) == 2  # not that binary: probed
    assert [p.name for p in tmp_path.iterdir()] == ["runtime.probe"]


def _cgroup_hybrid() -> bool:
    mounts = Path("/proc/self/mountinfo").read_text()
    return " /sys/fs/cgroup/unified " in mounts and " - cgroup " in mounts


@pytest.mark.e2e
def test_home_is_added_by_the_runtime_only_when_missing(busybox_rootfs: Path, tmp_path: Path) -> None:
    r = execute([busybox_rootfs], tmp_path, Process(["env"], env=[PATH]))
    assert r.output.splitlines() == [PATH, "HOME=/root"]  # runc (like Docker) fills HOME from passwd


@pytest.mark.e2e
def test_reap_stale_containers_after_irctl_died(busybox_rootfs: Path, tmp_path: Path) -> None:
    marker = "irctl-reap-test-777"
    state = tmp_path / "state"
    rootfs = apply_layers([busybox_rootfs], tmp_path / "rootfs")  # a private copy: runc adds mount points
    script = f"""
import sys
from pathlib import Path
from backend.runtime.container import run
from backend.runtime.spec import Process
run(Path({str(rootfs)!r}), Process(["sh", "-c", ": {marker}; echo up; sleep 1000; echo never"], env=["PATH=/bin"]),
    network="none", hostname="x", output=lambda b: (sys.stdout.buffer.write(b), sys.stdout.flush()),
    state_dir=Path({str(state)!r}))
"""
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=Path(__file__).parents[2])
    assert child.stdout.readline() == b"up\n"
    assert reap_stale_containers(state) == []  # its owner is alive
    child.kill()  # irctl dies hard: no cleanup ran
    child.wait()
    child.stdout.close()
    assert pids_with(marker), "the container outlives its irctl process ..."
    reaped = reap_stale_containers(state)
    assert len(reaped) == 1 and reaped[0].startswith("irctl-")
    deadline = time.monotonic() + 10
    while pids_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pids_with(marker)  # ... until the reaper kills it
    assert state_is_clean(state)


def test_reap_dead_build_looks_for_a_runtime_only_when_containers_are_left(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import backend.runtime.container as container

    def no_lookup():
        raise AssertionError("find_runtime called")

    monkeypatch.setattr(container, "find_runtime", no_lookup)
    state = tmp_path / "irctl-dead"
    (state / "secrets-x").mkdir(parents=True)
    assert container.reap_dead_build(state) == [] and not state.exists()  # no container: no runtime probe

    def missing():
        raise RuntimeNotFound("none here")

    monkeypatch.setattr(container, "find_runtime", missing)
    (state / "bundles" / "irctl-0123456789abcdef.x").mkdir(parents=True)
    assert container.reap_dead_build(state) == [] and not state.exists()  # no runtime: the dir still goes


@pytest.mark.e2e
def test_two_containers_run_concurrently(busybox_rootfs: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    scripts = {  # each waits for the other: only passes if both run at the same time
        "a": "touch /s/a; i=0; while [ ! -f /s/b ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; ls /s",
        "b": "touch /s/b; i=0; while [ ! -f /s/a ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; ls /s",
    }
    results: dict[str, Result] = {}

    def go(name: str) -> None:
        results[name] = execute([busybox_rootfs], tmp_path, sh(scripts[name]),
                                [BindMount(shared, "/s", readonly=False)], name=name)

    threads = [threading.Thread(target=go, args=(n,)) for n in scripts]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert time.monotonic() - started < 20
    assert results["a"].output == results["b"].output == "a\nb\n"


def test_config_is_an_oci_runtime_spec_document(busybox_rootfs: Path) -> None:
    cfg = config_for(busybox_rootfs, Process(["true"], cwd="/"), [TmpfsMount("/t", size=1024)], network="host",
                     hostname="h", extra_files={})
    assert cfg["ociVersion"].startswith("1.")
    assert {"type": "network"} not in cfg["linux"]["namespaces"]
    assert {m["destination"] for m in cfg["mounts"]} >= {"/proc", "/dev", "/dev/pts", "/dev/shm", "/sys", "/t"}
    assert cfg["process"]["noNewPrivileges"] is True and cfg["process"]["terminal"] is False
    assert cfg["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert cfg["linux"]["resources"]["pids"] == {"limit": PIDS_LIMIT}
    assert "size=1024" in next(m for m in cfg["mounts"] if m["destination"] == "/t")["options"]
    with pytest.raises(ValueError):  # the default network needs the namespace backend.runtime.netns made
        config_for(busybox_rootfs, Process(["true"]), [], network="default", hostname="h", extra_files={})
    with pytest.raises(ValueError):
        config_for(busybox_rootfs, Process(["true"]), [], network="bridge", hostname="h", extra_files={})


# ---------------------------------------------------------------------------------------------- USER resolution

@pytest.fixture
def userroot(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                     "app:x:1000:1000:App:/home/app:/bin/sh\n"
                                     "# comment\n"
                                     "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    (root / "etc/group").write_text("root:x:0:\nwheel:x:10:app,root\napp:x:1000:\n"
                                    "audio:x:29:app\nnogroup:x:65534:\n")
    return root


@pytest.mark.parametrize("spec,expected", [
    ("", (0, 0, (0, 10), "/root")),
    ("root", (0, 0, (0, 10), "/root")),
    ("app", (1000, 1000, (1000, 10, 29), "/home/app")),
    ("1000", (1000, 1000, (1000, 10, 29), "/home/app")),
    ("app:audio", (1000, 29, (29,), "/home/app")),
    ("app:65534", (1000, 65534, (65534,), "/home/app")),
    ("1000:4242", (1000, 4242, (4242,), "/")),  # BuildKit's fast path: both numeric, no file read
    ("root:10", (0, 10, (10,), "/")),
    ("app:root", (1000, 0, (0,), "/home/app")),
    ("root:wheel", (0, 10, (10,), "/root")),
    ("4242", (4242, 0, (0,), "/")),
    ("4242:4243", (4242, 4243, (4243,), "/")),
    ("nobody", (65534, 65534, (65534,), "/nonexistent")),
])
def test_resolve_user(userroot: Path, spec: str, expected: tuple) -> None:
    u = resolve_user(userroot, spec)
    assert (u.uid, u.gid, u.additional_gids, u.home) == expected


@pytest.mark.parametrize("spec,message", [
    ("ghost", "unable to find user ghost"),
    ("app:ghosts", "unable to find group ghosts"),
    ("99999999999", "out of range"),
    pytest.param("9" * 5000, "out of range", id="5000-digits"),
    ("\u00b2", "unable to find user \u00b2"),  # a digit to str.isdigit, not to int()
    ("app:\u0661", "unable to find group"),
    (":wheel", "empty user"),
])
def test_resolve_user_errors(userroot: Path, spec: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        resolve_user(userroot, spec)


def test_resolve_user_never_reads_outside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    outside = tmp_path / "outside-passwd"
    outside.write_text("evil:x:7:7::/:/bin/sh\n")
    os.symlink(str(outside), root / "etc/passwd")  # absolute: resolves to <root>/<tmp>/outside-passwd
    with pytest.raises(UserError):
        resolve_user(root, "evil")
    os.unlink(root / "etc/passwd")
    os.mkfifo(root / "etc/passwd")  # must not block
    assert resolve_user(root, "5").uid == 5
    assert resolve_user(tmp_path / "empty", "0:0").uid == 0


def test_resolve_user_reads_hostile_files_boundedly(tmp_path: Path) -> None:
    """The image's passwd and group are the image author's: weird lines are skipped or read as runc
    reads them (lines end at newlines only), ids out of range are no ids, and a file over BuildKit's
    10 MiB is an error, not a silently truncated last line."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_bytes(b"u:x:1000:1000::/:/bin/sh\nbig:x:99999999999999:1::/:\n:::\n\xff\xfe\n")
    (root / "etc/group").write_bytes(b"odd:x:20:u\x1cwheel:x:0:u\nhuge:x:99999999999:u\nshort:x\n"
                                     b"real:x:30:nobody,u,\n" + b"pad:x:40:" + b"y," * 1000 + b"\n")
    u = resolve_user(root, "u")
    assert u.additional_gids == (1000, 30)  # not 0: "\x1c" does not end a line; a huge gid is skipped
    with pytest.raises(UserError, match="malformed passwd entry"):
        resolve_user(root, "big")
    (root / "etc/group").write_bytes(b"g:x:1:u\n" + b"#" * (10 << 20))
    with pytest.raises(UserError, match="/etc/group is larger than 10 MiB"):
        resolve_user(root, "u")
    assert resolve_user(root, "1000:5").gid == 5  # both numeric: the fast path reads neither file


def test_resolve_user_in_the_busybox_image(busybox_rootfs: Path) -> None:
    assert resolve_user(busybox_rootfs, "nobody").uid == 65534
    assert stat.S_ISREG(os.stat(busybox_rootfs / "etc/passwd").st_mode)
