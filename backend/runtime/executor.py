"""The executor: what the exec handler asks of whatever runs a step's process.

The handler prepares everything a run needs on the host — the merged rootfs, the runtime mounts, the
process (argv, env, cwd, uid/gid), the network mode — and hands it to an ``Executor``; the executor
only runs it and reports the exit status (as BuildKit's ``executor.Executor``).  So the solver's
logic (keys, cache hits, early cutoff, parallelism, errors, cancellation, mounts) can be tested with
an in-process fake (``tests/support/fake_executor.py``) and no root, and the real OCI runtime
(``OCIExecutor``: runc or crun, ``backend.runtime.container``) keeps its own tests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from backend.runtime import container, finder, spec
from backend.runtime.netns import NetworkPool


class Executor(Protocol):
    """Runs one process in a root filesystem, for one build (several runs may overlap)."""

    def ready(self) -> None:
        """Find what a run needs (an OCI runtime, …); raise ``finder.RuntimeNotFound`` when it is
        missing, before the step takes a job slot."""

    def warm(self) -> None:
        """Get ready ahead of the first run (the build calls it once, on a background thread, when
        some step runs a process).  Errors are left for the run that needs the missing piece."""

    def run(self, rootfs: Path, process: spec.Process, mounts: Sequence[spec.Mount], *, network: str,
            hostname: str, output: Callable[[bytes], None], cancel: threading.Event, privileged: bool,
            sandbox: spec.Sandbox = spec.Sandbox()) -> int:
        """Run ``process`` on ``rootfs`` with ``mounts``; return its exit status (128+N: killed by
        signal N).  Output (stdout and stderr together) goes to ``output`` as it arrives.  Raises
        ``container.Cancelled`` once ``cancel`` is set (the process is killed first) and
        ``spec.ContainerStartError`` when the process cannot be started."""

    def shell(self, rootfs: Path, process: spec.Process, mounts: Sequence[spec.Mount], *, network: str,
              hostname: str, cancel: threading.Event, privileged: bool,
              sandbox: spec.Sandbox = spec.Sandbox()) -> int:
        """Run ``process`` as ``run`` would, but on this process's terminal, and return its exit
        status: the shell ``--on-error=shell`` opens in a failed step's container
        (``backend.ops.debugshell``).  Raises as ``run`` does."""

    def close(self) -> None:
        """Wait for what runs still left behind (deletes, networks); the build is over."""


class OCIExecutor:
    """``Executor`` on runc or crun (``backend.runtime.container``): bundles and runtime state in
    ``state_dir`` (on a tmpfs, removed by the caller after ``close``), private networks from one pool
    per build (``private_network``: some step has the default private network), and the runtime found
    (and probed, remembered in ``memo``) once."""

    def __init__(self, state_dir: Path, memo: Path, scratch: Path, private_network: bool) -> None:
        self.state_dir = state_dir
        self._memo, self._scratch = memo, scratch
        self._runtime: finder.Runtime | None = None
        self._networks = NetworkPool() if private_network else None
        self._deferred: list = []  # runtime deletes still running (container.finish_deferred)
        self._lock = threading.Lock()

    def ready(self) -> None:
        self._find()

    def _find(self) -> finder.Runtime:
        with self._lock:
            if self._runtime is None:
                self._runtime = finder.find_runtime(memo=self._memo, scratch=self._scratch)
            return self._runtime

    def warm(self) -> None:
        if self._networks is not None:
            self._networks.prestart()  # the first step's network, while bases are pulled
        try:
            self._find()  # probing crun costs two process runs
        except Exception:  # noqa: BLE001 - reported by the first run
            pass

    def run(self, rootfs: Path, process: spec.Process, mounts: Sequence[spec.Mount], *, network: str,
            hostname: str, output: Callable[[bytes], None], cancel: threading.Event, privileged: bool,
            sandbox: spec.Sandbox = spec.Sandbox()) -> int:
        return container.run(rootfs, process, mounts, network=network, hostname=hostname, output=output,
                             state_dir=self.state_dir, cancel=cancel, runtime=self._find(), privileged=privileged,
                             deferred=self._deferred, networks=self._networks, sandbox=sandbox)

    def shell(self, rootfs: Path, process: spec.Process, mounts: Sequence[spec.Mount], *, network: str,
              hostname: str, cancel: threading.Event, privileged: bool,
              sandbox: spec.Sandbox = spec.Sandbox()) -> int:
        return container.run_interactive(rootfs, process, mounts, network=network, hostname=hostname,
                                         state_dir=self.state_dir, cancel=cancel, runtime=self._find(),
                                         privileged=privileged, sandbox=sandbox)

    def close(self) -> None:
        if self._networks is not None:
            self._networks.close()
        container.finish_deferred(self._deferred)
