"""Finding the OCI runtime to run with: `$IRCTL_RUNTIME`, else crun where it works on this host
(probed once per binary, boot and user, the answer remembered), else runc; runc gains
`--rootless true` inside a user namespace.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from backend.errors import ContainerError
from backend.runtime.spec import Process, config_for
from backend.userns import in_user_namespace


CONTAINER_PREFIX = "irctl-"  # every container irctl creates is named so (crash cleanup finds them by it)


class RuntimeNotFound(ContainerError):
    """No usable OCI runtime on this host."""


@dataclass(frozen=True)
class Runtime:
    name: str
    path: str
    extra_args: tuple[str, ...] = field(default=())

    def command(self, state_dir: Path, *args: str) -> list[str]:
        return [self.path, "--root", os.fspath(state_dir), *self.extra_args, *args]



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
