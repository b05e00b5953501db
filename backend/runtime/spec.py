"""The OCI runtime-spec config of one run (config.json), and the vocabulary it is made from: the
process (`Process`), the caller's mounts (`BindMount`, `TmpfsMount`, `FileMount`) and the sandbox's
defaults.  `config_for` is the one home of the sandbox described in `backend.runtime.container`'s
module doc: namespaces, capabilities, seccomp, masked paths, limits, and the rootless differences.
"""

from __future__ import annotations

import functools
import os
import posixpath
import resource
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from backend.errors import ContainerError
from backend.runtime.seccomp import SeccompError, linux_seccomp
from backend.userns import in_user_namespace, read_id_map

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
DEFAULT_SHM_SIZE = 64 << 20  # /dev/shm without --shm-size: Docker's and BuildKit's 64 MiB
RLIM_INFINITY = (1 << 64) - 1  # -1 in a limit: the runtime spec's rlimits are unsigned
_RLIMIT_LOCKS = 10  # the one docker limit name Python's `resource` does not spell (asm-generic/resource.h)
# Limits that grant what CAP_SYS_NICE does (SCHED_FIFO up to `rtprio`, a nice value below 0): the
# sandbox drops that capability, so a graph never raises them above irctl's own, even as root.
_SCHEDULING = ("rtprio", "nice")
DEFAULT_TMPFS_SIZE = 1 << 30  # a tmpfs mount without size= (the kernel's default is half of RAM, per mount)


class ContainerStartError(ContainerError):
    """The runtime could not create or start the container (bad config, missing executable, ...)."""


@dataclass(frozen=True)
class Process:
    """What to execute: argv, environment (`KEY=VALUE` strings, or a mapping), cwd and credentials.
    `rlimits`: `(name, soft, hard)` with docker's names (`nofile`), -1 unlimited; they replace the
    sandbox's own limit of that name (`config_for`)."""

    args: Sequence[str]
    env: Sequence[str] | Mapping[str, str] = ()
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: Sequence[int] = ()
    rlimits: Sequence[tuple[str, int, int]] = ()

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
        object.__setattr__(self, "rlimits", tuple(self.rlimits))
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


def standard_mount_targets() -> tuple[str, ...]:
    """Container paths the runtime mounts on every run (besides the caller's mounts)."""
    return ("/proc", "/dev", "/sys", "/etc/hosts", "/etc/resolv.conf")


def mount_targets(mounts: Sequence[Mount]) -> tuple[str, ...]:
    """Every path a run with `mounts` mounts on: what `mountpoints.remove_mount_stubs` needs."""
    return standard_mount_targets() + tuple(m.target for m in mounts)


@dataclass(frozen=True)
class Sandbox:
    """What a run adds to the container around its process: `/etc/hosts` lines (`(host, ip)`, in
    order) and the size of `/dev/shm` in bytes (0: `DEFAULT_SHM_SIZE`).  Both come from the graph
    (`--add-host`, `--shm-size`); `ir.validate` has refused anything that is not one host token,
    one address, or a size in range before a run gets here."""

    extra_hosts: Sequence[tuple[str, str]] = ()
    shm_size: int = 0


def hosts_file(hostname: str, extra_hosts: Sequence[tuple[str, str]] = ()) -> str:
    for host, ip in extra_hosts:  # the IR's rule, again at the point of use: one line per entry
        if not host or any(c.isspace() for c in host + ip) or "#" in host + ip or "%" in ip:
            raise ValueError(f"not a hosts entry: {host!r} {ip!r}")
    return (f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            f"127.0.1.1\t{hostname}\n" + "".join(f"{ip}\t{host}\n" for host, ip in extra_hosts))


def host_resolv_conf() -> str:
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
               netns: str | None = None, shm_size: int = 0) -> dict:
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
    rlimits = {"nofile": (nofile, nofile)}
    oci_mounts: list[dict] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={shm_size or DEFAULT_SHM_SIZE}"]},
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
        rlimits["nproc"] = (PIDS_LIMIT, PIDS_LIMIT)
        for kind in ("uid", "gid"):
            linux[f"{kind}Mappings"] = [{"containerID": inside, "hostID": inside, "size": count}
                                        for inside, _outside, count in read_id_map(kind)]
    rlimits.update(_requested_rlimits(process.rlimits, rootless))
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
            "rlimits": [{"type": f"RLIMIT_{name.upper()}", "soft": soft, "hard": hard}
                        for name, (soft, hard) in rlimits.items()],
            # setuid/setgid/file caps do not elevate (`USER app` + `RUN sudo …` fails; BuildKit leaves this off
            # since moby/buildkit#745 for that reason); `security=insecure` steps get it off too
            "noNewPrivileges": not privileged,
        },
        "root": {"path": os.path.abspath(rootfs), "readonly": False},
        "hostname": hostname,
        "mounts": oci_mounts,
        "linux": linux,
    }


def _requested_rlimits(requested: Sequence[tuple[str, int, int]], rootless: bool) -> dict[str, tuple[int, int]]:
    """A step's `--ulimit`s as the runtime takes them (-1: `RLIM_INFINITY`).  Raising a hard limit
    above this process's own needs CAP_SYS_RESOURCE in the initial user namespace, which a rootless
    build never has (nor root in a container that dropped it): such a step fails here, naming the
    limit, rather than in the runtime's setrlimit.  Rootless, `nproc` never goes above `PIDS_LIMIT`,
    the sandbox's fork-bomb bound there (no cgroup).  `rtprio` and `nice` never go above irctl's own
    (`_SCHEDULING`): a real-time busy loop would starve the host's processes."""
    out = {}
    may_raise = not rootless and _has_sys_resource()
    for name, soft, hard in requested:
        soft_v, hard_v = (RLIM_INFINITY if v == -1 else v for v in (soft, hard))
        if not may_raise or name in _SCHEDULING:
            own = resource.getrlimit(getattr(resource, f"RLIMIT_{name.upper()}", _RLIMIT_LOCKS))[1]
            own = RLIM_INFINITY if own == resource.RLIM_INFINITY else own
            if hard_v > own:
                who = ("a step without CAP_SYS_NICE" if may_raise else
                       "a rootless build" if rootless else "irctl without CAP_SYS_RESOURCE")
                raise ContainerStartError(f"--ulimit {name}={soft}:{hard}: {who} cannot raise the hard limit above "
                                          f"its own ({'unlimited' if own == RLIM_INFINITY else own})")
        if rootless and name == "nproc":
            soft_v, hard_v = min(soft_v, PIDS_LIMIT), min(hard_v, PIDS_LIMIT)
        out[name] = (soft_v, hard_v)
    return out


def _has_sys_resource() -> bool:
    try:
        with open("/proc/self/status") as f:
            eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        return False
    return bool(eff >> _CAPS_BY_NUMBER.index("CAP_SYS_RESOURCE") & 1)
