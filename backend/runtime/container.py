"""Run one process in an OCI runtime (runc, or crun where it works) on a prepared root filesystem.

`run()` writes an OCI runtime bundle (config.json per the runtime spec), starts `<runtime> --root <state_dir>
run --detach` under a tiny subreaper shim that reaps the container's init for its exit code, streams the
combined stdout/stderr (one pipe, order kept) to a callback, and always leaves nothing behind: on cancel or
error the container is killed and `delete --force`d. The runtime is chosen by `find_runtime()`
(`backend.runtime.finder`).

The sandbox, at least Docker's/BuildKit's defaults (`backend.runtime.spec.config_for` is its one home): pid/ipc/uts/mount
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
import select
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from backend.errors import ContainerError
from backend.fs.mountpoints import mkdirs_in_root, remove_mount_stubs, resolve_in_root
from backend.runtime.finder import CONTAINER_PREFIX, Runtime, RuntimeNotFound, find_runtime
from backend.runtime.netns import NetworkError, NetworkPool, StepNetwork, resolv_conf
from backend.runtime.spec import (ContainerStartError, Mount, Process, Sandbox, config_for, host_resolv_conf,
                                  hosts_file, mount_targets)
from backend.snapshot.base import Snapshotter, abandoned_dirs, held_dir
from backend.userns import in_user_namespace
from backend.fs import safefs

class Cancelled(ContainerError):
    """The run was cancelled; the container has been killed and deleted."""



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
        networks: NetworkPool | None = None, sandbox: Sandbox = Sandbox()) -> int:
    """Run `process` in a container on `rootfs`; return its exit code (128+N when killed by signal N).

    Combined stdout/stderr go to `output` as they arrive; stdin is /dev/null. Raises `Cancelled` when
    `cancel` is set (the container is killed first), `ContainerStartError` when the runtime cannot start
    it (e.g. the executable does not exist), `RuntimeNotFound` when there is no runtime. An exception from
    `output` kills the container and is re-raised. With `deferred` (a list), the `delete` of a container
    that exited by itself runs in the background (its thread is appended): the caller calls
    `finish_deferred(deferred)` before removing `state_dir`. `networks`: where a `network="default"` run
    takes its private network from (a build's pool, see `backend.runtime.netns`); without it one is started here.
    `sandbox`: extra /etc/hosts lines and the /dev/shm size (`spec.Sandbox`)."""
    runtime = runtime or find_runtime()
    with _bundle(rootfs, process, mounts, network=network, hostname=hostname, state_dir=state_dir,
                 privileged=privileged, networks=networks, sandbox=sandbox) as (bundle, container_id):
        return _run_bundle(runtime, Path(state_dir), bundle, container_id, output, cancel, deferred)


def run_interactive(rootfs: Path, process: Process, mounts: Sequence[Mount] = (), *, network: str, hostname: str,
                    state_dir: Path, cancel: threading.Event | None = None, runtime: Runtime | None = None,
                    privileged: bool = False, sandbox: Sandbox = Sandbox()) -> int:
    """Run `process` as `run` would (same sandbox, network and mounts), but on a terminal: the runtime
    runs in the foreground with `process.terminal` set, gives the container a pty of its own and joins
    it to this process's stdin/stdout (which must be a terminal: the caller checks), as `docker run -it`
    does.  Returns the exit code; `cancel` kills the container (the build is being torn down)."""
    runtime = runtime or find_runtime()
    state_dir = Path(state_dir)
    with _bundle(rootfs, process, mounts, network=network, hostname=hostname, state_dir=state_dir,
                 privileged=privileged, terminal=True, sandbox=sandbox) as (bundle, container_id):
        log_file = bundle / "runtime.log"
        argv = runtime.command(state_dir, "run", "--bundle", os.fspath(bundle), container_id)
        argv[1:1] = [f"--log={log_file}", "--log-format=json"]
        # in our process group, so it may read the terminal; its own stdin/stdout are the terminal's
        proc = subprocess.Popen(argv)
        try:
            while proc.poll() is None:
                if cancel is not None and cancel.is_set():
                    _kill(runtime, state_dir, container_id, proc)
                    raise Cancelled(f"container {container_id} cancelled")
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.1)
        except BaseException:
            if proc.poll() is None:
                _kill(runtime, state_dir, container_id, proc)
            raise
        finally:
            subprocess.run(runtime.command(state_dir, "delete", "--force", container_id),
                           stdin=subprocess.DEVNULL, capture_output=True)
        code = proc.returncode
        if code != 0 and _runtime_failed(log_file):
            raise ContainerStartError(f"{runtime.name} could not start the container: {_runtime_error(log_file)}")
        return code if code >= 0 else 128 - code


def _runtime_failed(log_file: Path) -> bool:
    """Whether the runtime logged an error of its own (else a non-zero exit is the process's)."""
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except OSError:
        return False
    for line in lines:
        with contextlib.suppress(ValueError, AttributeError):
            if json.loads(line).get("level") in ("error", "fatal"):
                return True
    return False


@contextlib.contextmanager
def _bundle(rootfs: Path, process: Process, mounts: Sequence[Mount], *, network: str, hostname: str,
            state_dir: Path, privileged: bool, networks: NetworkPool | None = None,
            terminal: bool = False, sandbox: Sandbox = Sandbox()):
    """A run's bundle under `state_dir` (config.json, its /etc/hosts and resolv.conf) and its network,
    held until the run is over; yields (bundle dir, container id)."""
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
            (files / "hosts").write_text(hosts_file(hostname, sandbox.extra_hosts))
            resolv = host_resolv_conf()
            (files / "resolv.conf").write_text(resolv_conf(resolv) if net is not None else resolv)
            cfg = config_for(Path(rootfs), process, mounts, network=network, hostname=hostname,
                             extra_files={"/etc/hosts": files / "hosts", "/etc/resolv.conf": files / "resolv.conf"},
                             privileged=privileged, netns=net.path if net is not None else None,
                             shm_size=sandbox.shm_size)
            cfg["process"]["terminal"] = terminal
            (bundle / "config.json").write_text(json.dumps(cfg, indent=1))
            if net is not None:
                try:
                    net.wait_ready()
                except NetworkError as e:
                    raise ContainerStartError(str(e)) from None
            yield bundle, container_id


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


def reap_dead_build(state_dir: Path) -> list[str]:
    """Everything a build killed mid-run left in its runtime dir (`backend.ops.mounts.secret_dir`): its
    containers killed and deleted, then the dir removed.  The store's crash recovery calls it
    (`CacheStore.clean_stale`) once the build's session lock is free, so every container there is
    abandoned.  The runtime is the one `find_runtime` picks, as for the build (runc cannot delete what
    crun made); it is looked for only when there are containers to reap."""
    state_dir = Path(state_dir)
    reaped: list[str] = []
    if any(name.startswith(CONTAINER_PREFIX) for d in (state_dir, state_dir / "bundles") for name in _names(d)):
        try:
            runtime = find_runtime()
        except RuntimeNotFound:  # nothing could have run them here: only the dir is left to remove
            runtime = None
        if runtime is not None:
            reaped = reap_stale_containers(state_dir, runtime)
    safefs.rmtree(state_dir, ignore_errors=True)
    return reaped


def _names(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


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
