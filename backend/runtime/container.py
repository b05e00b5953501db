"""Run one process in an OCI runtime (runc, or crun where it works) on a prepared root filesystem.

`run()` writes an OCI runtime bundle (config.json per the runtime spec), starts `<runtime> --root <state_dir>
run --detach` under a tiny subreaper shim that reaps the container's init for its exit code, streams the
combined stdout/stderr (one pipe, order kept) to a callback, and always leaves nothing behind: on cancel or
error the container is killed and `delete --force`d. The runtime is chosen by `find_runtime()`.

The sandbox, at least Docker's/BuildKit's defaults (`config_for` is its one home): pid/ipc/uts/mount
namespaces; Docker's capability set without CAP_NET_RAW (`DEFAULT_CAPABILITIES`); Docker's seccomp profile
for that set (`backend.runtime.seccomp`, and no run without it); `noNewPrivileges` (setuid binaries such as sudo do
not elevate: BuildKit leaves this off); masked and read-only /proc paths; /sys read-only; at most
`PIDS_LIMIT` processes (the pids cgroup as root, RLIMIT_NPROC in the run's own user namespace rootless);
`DEFAULT_TMPFS_SIZE` for a tmpfs mount without a size. `privileged` (`security=insecure`, granted by the
caller) drops all of it but the namespaces and the pids limit, as BuildKit's insecure mode does.

Network modes: `default` is a private network namespace per run with outbound access through slirp4netns
and no way to the host's loopback (`backend.runtime.netns`, which also pools their start-up), as root and rootless;
`none` is a fresh namespace holding only loopback (the runtime brings `lo` up); `host` shares the host's
(the solver allows it only under `--allow network.host`).

Rootless (this process is uid 0 of the user namespace `backend.userns` made): the bundle gains a user
namespace whose uid/gid mappings repeat ours (`linux.uidMappings`), no cgroup settings, `/sys` as an rbind
instead of sysfs (a sysfs mount needs a network namespace of our own), and runc runs with `--rootless true`;
`config_for` and `find_runtime` keep all of that in one place.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import posixpath
import resource
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from backend.errors import BackendError
from backend.fs.mountpoints import mkdirs_in_root, remove_mount_stubs, resolve_in_root
from backend.runtime.netns import NetworkError, NetworkPool, StepNetwork, resolv_conf
from backend.runtime.seccomp import SeccompError, linux_seccomp
from backend.snapshot.snapshotter import Snapshotter, abandoned_dirs, held_dir
from backend.userns import in_user_namespace, read_id_map
from backend.fs import safefs

NETWORK_MODES = ("none", "host", "default")

DEFAULT_CAPABILITIES = (  # Docker's default set without CAP_NET_RAW (no raw sockets: no sniffing, no spoofing)
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
)
MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
DEFAULT_NOFILE = 1 << 20
# Processes + threads per step: a fork bomb stops here (podman: 2048; Docker, BuildKit: none). Threads count,
# so it grows with the cores a `make -j$(nproc)` or a threaded compiler fans out to.
PIDS_LIMIT = max(4096, 32 * (os.cpu_count() or 1))
DEFAULT_TMPFS_SIZE = 1 << 30  # a tmpfs mount without size= (the kernel's default is half of RAM, per mount)
CONTAINER_PREFIX = "irctl-"


class ContainerError(BackendError):
    """Base of this module's errors (a process exiting non-zero is not one: that is its exit code)."""


class RuntimeNotFound(ContainerError):
    """No usable OCI runtime on this host."""


class ContainerStartError(ContainerError):
    """The runtime could not create or start the container (bad config, missing executable, ...)."""


class Cancelled(ContainerError):
    """The run was cancelled; the container has been killed and deleted."""


@dataclass(frozen=True)
class Process:
    """What to execute: argv, environment (`KEY=VALUE` strings, or a mapping), cwd and credentials."""

    args: Sequence[str]
    env: Sequence[str] | Mapping[str, str] = ()
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: Sequence[int] = ()

    def __post_init__(self) -> None:
        if not self.args:
            raise ValueError("Process.args must not be empty")
        env = [f"{k}={v}" for k, v in self.env.items()] if isinstance(self.env, Mapping) else list(self.env)
        bad = [e for e in env if "=" not in e or e.startswith("=")]
        if bad:
            raise ValueError(f"Process.env entries must be KEY=VALUE, got {bad[0]!r}")
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "env", tuple(env))
        object.__setattr__(self, "additional_gids", tuple(self.additional_gids))
        if not self.cwd.startswith("/"):
            raise ValueError(f"Process.cwd must be absolute, got {self.cwd!r}")


def _check_target(mount: object) -> None:
    target = getattr(mount, "target")
    if not target.startswith("/"):
        raise ValueError(f"mount target must be an absolute container path, got {target!r}")
    object.__setattr__(mount, "target", posixpath.normpath(target).replace("//", "/"))


@dataclass(frozen=True)
class BindMount:
    """A host path bound at `target`; read-write binds write through to `source`."""

    source: Path
    target: str
    readonly: bool = True

    __post_init__ = _check_target


@dataclass(frozen=True)
class TmpfsMount:
    """A fresh tmpfs at `target`; its contents vanish with the container."""

    target: str
    size: int | None = None  # bytes
    mode: int = 0o1777

    __post_init__ = _check_target


@dataclass(frozen=True)
class FileMount:
    """A single host file bound read-only at `target` (secrets: the caller keeps it on its own tmpfs)."""

    source: Path
    target: str

    __post_init__ = _check_target


Mount = BindMount | TmpfsMount | FileMount


@dataclass(frozen=True)
class Runtime:
    name: str
    path: str
    extra_args: tuple[str, ...] = field(default=())

    def command(self, state_dir: Path, *args: str) -> list[str]:
        return [self.path, "--root", os.fspath(state_dir), *self.extra_args, *args]


# ---------------------------------------------------------------------------------------------- detection

@functools.cache
def _crun_works(path: str) -> bool:
    """One-time probe: can crun create a container here? (It refuses hybrid cgroup v1+v2 hosts.)

    The probe runs a nonexistent program in an empty root: an error naming that program means every
    namespace, mount and cgroup step before exec succeeded."""
    with tempfile.TemporaryDirectory(prefix="irctl-crun-probe.") as d:
        os.mkdir(os.path.join(d, "rootfs"))
        cfg = config_for(Path(d, "rootfs"), Process(args=["/irctl-probe"]), [], network="none",
                         hostname="probe", extra_files={})
        cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] in ("/proc", "/dev")]
        Path(d, "config.json").write_text(json.dumps(cfg))
        try:
            res = subprocess.run([path, "--root", os.path.join(d, "state"), "run", "--bundle", d, "irctl-probe"],
                                 stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return False
        finally:
            subprocess.run([path, "--root", os.path.join(d, "state"), "delete", "--force", "irctl-probe"],
                           capture_output=True)
        return res.returncode != 0 and b"irctl-probe" in res.stderr + res.stdout


def _crun_probe_key(path: str) -> str | None:
    """What the crun probe's answer depends on: that binary, this boot (cgroup layout), who we are."""
    try:
        st = os.stat(path)
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        # the id maps, not the namespace's inode: a rootless build makes a new namespace every
        # time, with the same maps (the user's subordinate ids), so the answer is the same
        userns = " ".join(w for m in ("uid", "gid") for w in Path(f"/proc/self/{m}_map").read_text().split())
    except OSError:
        return None
    return f"crun-probe-v2 {path} {st.st_size} {st.st_mtime_ns} {boot} {os.geteuid()} {userns}"


def _crun_usable(path: str, memo: Path | None, scratch: Path | None) -> bool:
    """``_crun_works``, remembered in the file ``memo`` (written through ``scratch``, a dir on its
    filesystem) for the same binary, boot and user: the probe costs two runtime runs per build."""
    key = _crun_probe_key(path) if memo is not None else None
    if key is not None:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            found, _, answer = Path(memo).read_text().partition("\n")  # type: ignore[arg-type]
            if found == key and answer in ("yes", "no"):
                return answer == "yes"
    works = _crun_works(path)
    if key is not None:
        with contextlib.suppress(OSError):
            fd, tmp = tempfile.mkstemp(prefix=".tmp-runtime-", dir=scratch or Path(memo).parent)  # type: ignore[arg-type]
            with os.fdopen(fd, "w") as f:
                f.write(f"{key}\n{'yes' if works else 'no'}")
            os.replace(tmp, memo)  # type: ignore[arg-type]
    return works


def find_runtime(memo: Path | None = None, scratch: Path | None = None) -> Runtime:
    """`$IRCTL_RUNTIME` (a name or a path) if set, else crun when it works on this host, else runc.
    `memo`: a file where whether crun works here is remembered (see `_crun_usable`)."""
    forced = os.environ.get("IRCTL_RUNTIME", "").strip()
    if forced:
        path = shutil.which(forced)
        if path is None:
            raise RuntimeNotFound(f"IRCTL_RUNTIME={forced!r}: no such executable")
        return Runtime(os.path.basename(forced), path, _rootless_args(path))
    crun = shutil.which("crun")
    if crun and _crun_usable(crun, memo, scratch):
        return Runtime("crun", crun)
    runc = shutil.which("runc")
    if runc:
        return Runtime("runc", runc, _rootless_args(runc))
    raise RuntimeNotFound("no OCI runtime found: install runc (apt-get install runc) or crun, "
                          "or point IRCTL_RUNTIME at one")


def _rootless_args(path: str) -> tuple[str, ...]:
    """runc's global `--rootless true` inside a user namespace (no cgroups, devices bound, not created)."""
    return ("--rootless", "true") if in_user_namespace() and os.path.basename(path).startswith("runc") else ()


# ---------------------------------------------------------------------------------------------- bundle

def standard_mount_targets() -> tuple[str, ...]:
    """Container paths the runtime mounts on every run (besides the caller's mounts)."""
    return ("/proc", "/dev", "/sys", "/etc/hosts", "/etc/resolv.conf")


def mount_targets(mounts: Sequence[Mount]) -> tuple[str, ...]:
    """Every path a run with `mounts` mounts on: what `mountpoints.remove_mount_stubs` needs."""
    return standard_mount_targets() + tuple(m.target for m in mounts)


def hosts_file(hostname: str) -> str:
    return (f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            f"127.0.1.1\t{hostname}\n")


def _host_resolv_conf() -> str:
    """The host's resolv.conf, copied (a container never sees later edits of the host's)."""
    try:
        return Path("/etc/resolv.conf").read_text()
    except OSError:
        return ""


_CAPS_BY_NUMBER = (  # linux/capability.h order
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)


@functools.cache
def all_capabilities() -> tuple[str, ...]:
    """Every capability this process may grant (its bounding set): `security: insecure`."""
    try:
        with open("/proc/self/status") as f:
            bnd = next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd:"))
    except (OSError, StopIteration, ValueError):
        return DEFAULT_CAPABILITIES
    return tuple(name for i, name in enumerate(_CAPS_BY_NUMBER) if bnd >> i & 1)


def config_for(rootfs: Path, process: Process, mounts: Sequence[Mount], *, network: str, hostname: str,
               extra_files: Mapping[str, Path], privileged: bool = False, rootless: bool | None = None,
               netns: str | None = None) -> dict:
    """The OCI runtime-spec config.json for one run. `extra_files`: container path → host file to bind ro.
    `privileged`: every capability, no masked or read-only paths, all devices allowed, no seccomp filter
    (BuildKit's `security.insecure`). `rootless` (default: whether we are in a user namespace): see the
    module doc. `netns`: for `network="default"`, the path of the namespace to join (`backend.runtime.netns`)."""
    if rootless is None:
        rootless = in_user_namespace()
    if network not in NETWORK_MODES:
        raise ValueError(f"network must be one of {', '.join(NETWORK_MODES)}, got {network!r}")
    if (network == "default") != (netns is not None):
        raise ValueError("a netns path goes with network='default', and only with it")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = DEFAULT_NOFILE if hard == resource.RLIM_INFINITY else min(DEFAULT_NOFILE, hard)
    root_user = process.uid == 0
    caps = list(all_capabilities() if privileged else DEFAULT_CAPABILITIES)
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if network == "none":
        namespaces.append({"type": "network"})
    elif network == "default":
        namespaces.append({"type": "network", "path": netns})
    rlimits = [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}]
    oci_mounts: list[dict] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}
        if not rootless else
        {"destination": "/sys", "type": "bind", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]},
    ]
    for target, source in extra_files.items():
        oci_mounts.append({"destination": target, "type": "bind", "source": os.fspath(source),
                           "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]})
    for m in sorted(mounts, key=lambda m: m.target.rstrip("/").count("/")):  # parents before children
        if isinstance(m, BindMount):
            oci_mounts.append({"destination": m.target, "type": "bind", "source": os.fspath(m.source),
                               "options": ["rbind", "ro" if m.readonly else "rw", "rprivate"]})
        elif isinstance(m, FileMount):
            oci_mounts.append({"destination": m.target, "type": "bind", "source": os.fspath(m.source),
                               "options": ["bind", "ro", "nosuid", "nodev", "noexec"]})
        elif isinstance(m, TmpfsMount):
            opts = ["nosuid", "nodev", f"mode={m.mode:o}"]
            opts.append(f"size={m.size if m.size is not None else DEFAULT_TMPFS_SIZE}")
            oci_mounts.append({"destination": m.target, "type": "tmpfs", "source": "tmpfs", "options": opts})
        else:
            raise TypeError(f"unknown mount {m!r}")
    linux: dict = {
        "namespaces": namespaces,
        "maskedPaths": [] if privileged else list(MASKED_PATHS),
        "readonlyPaths": [] if privileged else list(READONLY_PATHS),
        "resources": {"devices": [{"allow": privileged, "access": "rwm"}], "pids": {"limit": PIDS_LIMIT}},
    }
    if not privileged:
        try:
            linux["seccomp"] = linux_seccomp(tuple(caps))
        except SeccompError as e:
            raise ContainerStartError(str(e)) from None
    if rootless:  # our own mappings again, one user namespace deeper; no cgroups
        namespaces.append({"type": "user"})
        del linux["resources"]
        # No pids cgroup: RLIMIT_NPROC instead. Since Linux 5.14 it counts per (user namespace, uid), and
        # each run has a user namespace of its own, so it bounds this step's processes only (a rootful
        # step's uid 0 is the host's root, which RLIMIT_NPROC exempts: the cgroup above does it there).
        rlimits.append({"type": "RLIMIT_NPROC", "hard": PIDS_LIMIT, "soft": PIDS_LIMIT})
        for kind in ("uid", "gid"):
            linux[f"{kind}Mappings"] = [{"containerID": inside, "hostID": inside, "size": count}
                                        for inside, _outside, count in read_id_map(kind)]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": process.uid, "gid": process.gid, "additionalGids": list(process.additional_gids)},
            "args": list(process.args),
            "env": list(process.env),
            "cwd": process.cwd,
            "capabilities": {
                "bounding": caps,
                "effective": caps if root_user else [],
                "permitted": caps if root_user else [],
            },
            "rlimits": rlimits,
            # setuid/setgid/file caps do not elevate (`USER app` + `RUN sudo …` fails; BuildKit leaves this off
            # since moby/buildkit#745 for that reason); `security=insecure` steps get it off too
            "noNewPrivileges": not privileged,
        },
        "root": {"path": os.path.abspath(rootfs), "readonly": False},
        "hostname": hostname,
        "mounts": oci_mounts,
        "linux": linux,
    }


# ---------------------------------------------------------------------------------------------- run

def _prepare_cwd(rootfs: Path, process: Process) -> None:
    """Create a missing working directory (owned by the process user), as Docker/BuildKit do."""
    try:
        rel = resolve_in_root(rootfs, process.cwd)
        if not os.path.isdir(os.path.join(rootfs, rel)):
            mkdirs_in_root(rootfs, process.cwd, uid=process.uid, gid=process.gid)
    except OSError as e:
        raise ContainerStartError(f"cannot create working directory {process.cwd}: {e}") from e


def _pump(stream, output: Callable[[bytes], None], errors: list[BaseException], failed: threading.Event) -> None:
    try:
        while chunk := os.read(stream.fileno(), 65536):
            output(chunk)
    except BaseException as e:  # noqa: BLE001 - re-raised by the caller, which kills the container
        errors.append(e)
        failed.set()
        with contextlib.suppress(OSError):  # keep draining so the container never blocks on a full pipe
            while os.read(stream.fileno(), 65536):
                pass


def run(rootfs: Path, process: Process, mounts: Sequence[Mount] = (), *, network: str, hostname: str,
        output: Callable[[bytes], None], state_dir: Path, cancel: threading.Event | None = None,
        runtime: Runtime | None = None, privileged: bool = False, deferred: list | None = None,
        networks: NetworkPool | None = None) -> int:
    """Run `process` in a container on `rootfs`; return its exit code (128+N when killed by signal N).

    Combined stdout/stderr go to `output` as they arrive; stdin is /dev/null. Raises `Cancelled` when
    `cancel` is set (the container is killed first), `ContainerStartError` when the runtime cannot start
    it (e.g. the executable does not exist), `RuntimeNotFound` when there is no runtime. An exception from
    `output` kills the container and is re-raised. With `deferred` (a list), the `delete` of a container
    that exited by itself runs in the background (its thread is appended): the caller calls
    `finish_deferred(deferred)` before removing `state_dir`. `networks`: where a `network="default"` run
    takes its private network from (a build's pool, see `backend.runtime.netns`); without it one is started here."""
    runtime = runtime or find_runtime()
    state_dir = Path(state_dir)
    safefs.private_dir(state_dir)
    container_id = f"{CONTAINER_PREFIX}{uuid.uuid4().hex[:16]}"
    with held_dir(state_dir / "bundles", f"{container_id}.") as path:
        bundle = Path(path)
        _prepare_cwd(Path(rootfs), process)
        with contextlib.ExitStack() as stack:
            net = None
            if network == "default":  # slirp4netns starts while the bundle is written
                try:
                    net = networks.take() if networks is not None else StepNetwork().start()
                    stack.callback(net.close)
                except NetworkError as e:
                    raise ContainerStartError(str(e)) from None
            files = bundle / "files"
            files.mkdir()
            (files / "hosts").write_text(hosts_file(hostname))
            resolv = _host_resolv_conf()
            (files / "resolv.conf").write_text(resolv_conf(resolv) if net is not None else resolv)
            cfg = config_for(Path(rootfs), process, mounts, network=network, hostname=hostname,
                             extra_files={"/etc/hosts": files / "hosts", "/etc/resolv.conf": files / "resolv.conf"},
                             privileged=privileged, netns=net.path if net is not None else None)
            (bundle / "config.json").write_text(json.dumps(cfg, indent=1))
            if net is not None:
                try:
                    net.wait_ready()
                except NetworkError as e:
                    raise ContainerStartError(str(e)) from None
            return _run_bundle(runtime, state_dir, bundle, container_id, output, cancel, deferred)


def reap_stale_containers(state_dir: Path, runtime: Runtime | None = None) -> list[str]:
    """Kill and delete containers under `state_dir` whose irctl process died (its bundle's lock is free),
    and any of ours whose bundle is gone. Safe while other irctl processes run containers there."""
    runtime = runtime or find_runtime()
    state_dir = Path(state_dir)
    reaped = []
    for path, fd in abandoned_dirs(state_dir / "bundles", CONTAINER_PREFIX):
        try:
            container_id = os.path.basename(path).split(".")[0]
            _force_delete(runtime, state_dir, container_id)
            safefs.rmtree(path, ignore_errors=True)
            reaped.append(container_id)
        finally:
            os.close(fd)
    listed = subprocess.run(runtime.command(state_dir, "list", "--format", "json"), stdin=subprocess.DEVNULL,
                            capture_output=True, text=True)
    with contextlib.suppress(ValueError, TypeError):
        for c in json.loads(listed.stdout or "null") or []:
            if c["id"].startswith(CONTAINER_PREFIX) and not os.path.isdir(c.get("bundle") or "/nonexistent"):
                _force_delete(runtime, state_dir, c["id"])
                reaped.append(c["id"])
    return reaped


def _kill_all_args(container_id: str) -> tuple[str, ...]:
    """SIGKILL every process of the container. Rootless there is no cgroup to list them (`kill --all` fails):
    SIGKILL its init, whose death ends the container's pid namespace and everything in it."""
    return ("kill", container_id, "KILL") if in_user_namespace() else ("kill", "--all", container_id, "KILL")


def _force_delete(runtime: Runtime, state_dir: Path, container_id: str) -> None:
    for args in (_kill_all_args(container_id), ("delete", "--force", container_id)):
        subprocess.run(runtime.command(state_dir, *args), stdin=subprocess.DEVNULL, capture_output=True)


# Runs as a tiny parent of the runtime: `<runtime> run --detach` hands our stdout pipe straight to the
# container (one pipe, so stdout/stderr keep their order; foreground `runc run` copies them through two
# pipes and reorders), exits, and the container's init is re-parented to this subreaper, which reaps it.
_SHIM = r"""
import ctypes, os, sys
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
status_file, pid_file, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
def finish(kind, status):
    rc = os.waitstatus_to_exitcode(status)
    rc = rc if rc >= 0 else 128 - rc
    with open(status_file, "w") as f:
        f.write(f"{kind} {rc}")
    sys.exit(rc)
runtime = os.fork()
if runtime == 0:
    os.execv(argv[0], argv)
init, reaped = None, {}
while True:
    try:
        pid, status = os.wait()
    except ChildProcessError:
        sys.exit(255)
    reaped[pid] = status
    if pid == runtime:
        if os.waitstatus_to_exitcode(status) != 0:
            finish("runtime", status)
        with open(pid_file) as f:
            init = int(f.read())
    if init in reaped:  # the init may be re-parented and reaped before the runtime's own exit is seen
        finish("container", reaped[init])
"""


def run_on_layers(snapshotter: Snapshotter, lowers: Sequence[Path], upper: Path, workdir: Path, process: Process,
                  mounts: Sequence[Mount] = (), **run_kwargs) -> int:
    """Mount a snapshot of `lowers`, `run` the process on it, and leave in `upper` the new layer without the
    stubs the runtime created for mounting (`remove_mount_stubs`; a working dir created for the run stays).

    `run_kwargs` are `run`'s keyword arguments (network, hostname, output, state_dir, cancel, runtime)."""
    with snapshotter.mounted(lowers, upper, workdir) as rootfs:
        code = run(rootfs, process, mounts, **run_kwargs)
    remove_mount_stubs(upper, lowers, mount_targets(mounts), keep=[process.cwd])
    return code


def _run_bundle(runtime: Runtime, state_dir: Path, bundle: Path, container_id: str,
                output: Callable[[bytes], None], cancel: threading.Event | None, deferred: list | None = None) -> int:
    status_file, log_file = bundle / "exit-status", bundle / "runtime.log"
    argv = runtime.command(state_dir, "run", "--detach", "--bundle", os.fspath(bundle),
                           "--pid-file", os.fspath(bundle / "init.pid"), container_id)
    argv[1:1] = [f"--log={log_file}", "--log-format=json"]
    direct = _subreaper()  # we reap the container's init ourselves: no shim process to start
    if not direct:
        argv = [sys.executable, "-I", "-S", "-c", _SHIM, os.fspath(status_file), os.fspath(bundle / "init.pid"),
                *argv]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    errors: list[BaseException] = []
    failed = threading.Event()
    pump = threading.Thread(target=_pump, args=(proc.stdout, output, errors, failed), daemon=True)
    pump.start()
    cancelled = finished = False
    result: tuple[str, int] | None = None  # direct: ("runtime" | "container", exit code)
    init: int | None = None  # direct: the container's init, our child once the runtime has exited
    exited = _ExitWaiter(proc.pid, proc)
    try:
        while proc.poll() is None:  # the shim, or (direct) the runtime until the container has started
            if cancel is not None and cancel.is_set() or failed.is_set():
                cancelled = not failed.is_set()
                _kill(runtime, state_dir, container_id, proc)
                break
            exited(0.05)
        if direct and (cancelled or failed.is_set()) and proc.wait() == 0 and (bundle / "init.pid").exists():
            # The kill above can land before the runtime has created the container, which the runtime
            # then starts anyway: kill it again now that it exists, and reap its init below.
            init = int((bundle / "init.pid").read_text().strip())
            _kill(runtime, state_dir, container_id, proc)
        elif direct and not cancelled and not failed.is_set():
            if proc.returncode != 0:
                result = ("runtime", proc.returncode)
            else:
                init = int((bundle / "init.pid").read_text().strip())
                result = ("container", _wait_init(init, runtime, state_dir, container_id, proc, cancel, failed))
                init = None
                if cancel is not None and cancel.is_set() or failed.is_set():
                    cancelled = not failed.is_set()
        pump.join()
        finished = not cancelled and not errors
    except BaseException:
        _kill(runtime, state_dir, container_id, proc)
        raise
    finally:
        exited.close()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait()
        if init is not None:  # interrupted while it ran: killed above, reap it (best effort)
            with contextlib.suppress(ChildProcessError, OSError):
                for _ in range(50):
                    if os.waitpid(init, os.WNOHANG)[0] == init:
                        break
                    threading.Event().wait(0.1)
        pump.join(timeout=5)
        if proc.stdout:
            proc.stdout.close()
        delete = runtime.command(state_dir, "delete", "--force", container_id)
        if finished and deferred is not None:  # the container is gone; its runtime state can go later
            t = threading.Thread(target=subprocess.run, args=(delete,), name=f"delete-{container_id}", daemon=True,
                                 kwargs={"stdin": subprocess.DEVNULL, "capture_output": True})
            t.start()
            deferred.append(t)
        else:
            subprocess.run(delete, stdin=subprocess.DEVNULL, capture_output=True)
    if errors:
        raise errors[0]
    if cancelled:
        raise Cancelled(f"container {container_id} cancelled")
    if result is not None:
        kind, code = result
    else:
        kind, _, text = (status_file.read_text() if status_file.exists() else "runtime 255").partition(" ")
        code = int(text)
    if kind == "runtime":
        raise ContainerStartError(f"{runtime.name} could not start the container: {_runtime_error(log_file)}")
    return code


@functools.cache
def _subreaper() -> bool:
    """Make this process a child subreaper, once (`PR_SET_CHILD_SUBREAPER`): the init of a container
    that `<runtime> run --detach` started becomes our child when the runtime exits, so we wait for it
    ourselves instead of through a shim process (a Python start per RUN).  False where refused."""
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _wait_init(init: int, runtime: Runtime, state_dir: Path, container_id: str, proc: subprocess.Popen,
               cancel: threading.Event | None, failed: threading.Event) -> int:
    """Reap the container's init (our child: see `_subreaper`); on cancel or an output error kill the
    container first.  Returns its exit code, 128+N when killed by signal N."""
    waiter = _ExitWaiter(init)
    try:
        while True:
            pid, status = os.waitpid(init, os.WNOHANG)
            if pid == init:
                break
            if cancel is not None and cancel.is_set() or failed.is_set():
                _kill(runtime, state_dir, container_id, proc)
                _, status = os.waitpid(init, 0)
                break
            waiter(0.05)
    finally:
        waiter.close()
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def finish_deferred(deferred: list) -> None:
    """Wait for the runtime `delete`s that `run(..., deferred=deferred)` left running."""
    while deferred:
        deferred.pop().join()


class _ExitWaiter:
    """Waits up to N seconds for process `pid` to exit and returns as soon as it does (through a pidfd;
    `Popen.wait(timeout)` sleeps in steps of up to 50 ms, which a short RUN pays after every exit)."""

    def __init__(self, pid: int, proc: subprocess.Popen | None = None) -> None:
        self.proc = proc
        self.pidfd: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            self.pidfd = os.pidfd_open(pid)

    def __call__(self, timeout: float) -> None:
        if self.pidfd is None:
            if self.proc is None:
                threading.Event().wait(min(timeout, 0.01))
                return
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
            return
        poller = select.poll()
        poller.register(self.pidfd, select.POLLIN)
        poller.poll(int(timeout * 1000))

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def _runtime_error(log_file: Path) -> str:
    """The last error the runtime logged (runc/crun write one message per line, text or JSON)."""
    try:
        lines = [line for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    for line in reversed(lines):
        with contextlib.suppress(ValueError, AttributeError):
            entry = json.loads(line)
            if entry.get("level") in ("error", "fatal"):
                return entry.get("msg", line)
        if "level=error" in line or "level=fatal" in line or not line.startswith("time="):
            return line.split("msg=", 1)[-1].strip('"')
    return lines[-1] if lines else "no log"


def _kill(runtime: Runtime, state_dir: Path, container_id: str, proc: subprocess.Popen) -> None:
    """SIGKILL the container's processes; if the runtime had not created it yet, kill the runtime itself."""
    for _ in range(50):  # the runtime may still be creating it: retry until it exits
        subprocess.run(runtime.command(state_dir, *_kill_all_args(container_id)),
                       stdin=subprocess.DEVNULL, capture_output=True)
        try:
            proc.wait(timeout=0.2)
            return
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 9)
    proc.wait()
