"""A step's private network: a fresh network namespace with outbound access through slirp4netns.

``network: default`` steps get one each (what BuildKit's default "sandbox" network is), so a step never
sees the host's interfaces, its loopback services or another step's traffic, as root and rootless alike:

* the namespace is made by a short-lived thread's ``unshare(CLONE_NEWNET)`` (namespaces are per thread)
  and kept only as a file descriptor of this process: no named netns on the host, nothing to clean up —
  it vanishes when the step's container and slirp4netns, the only other holders, are gone; rootless it
  belongs to our user namespace, which is what slirp4netns and the runtime need to join it;
* ``lo`` is brought up with one ioctl from inside it, and the runtime joins it by path
  (``/proc/<our pid>/fd/<n>``);
* slirp4netns (user-mode TCP/IP, Debian ``slirp4netns``) gives it ``tap0`` = 10.0.2.100/24, gateway
  10.0.2.2 and a DNS forwarder at 10.0.2.3, with ``--disable-host-loopback`` so 10.0.2.2 does *not*
  lead to the host's 127.0.0.1, ``--enable-sandbox`` and ``--enable-seccomp`` because it parses the
  step's packets.  It is started with ``--exit-fd``: it exits as soon as our end of that pipe closes,
  which the kernel does when this process dies, SIGKILL included, so no helper outlives irctl.

Start-up costs ~20-40 ms (mostly slirp4netns's own sandbox), so a build takes its steps' networks from a
:class:`NetworkPool` that starts the next one while a step runs (BuildKit keeps a pool of network
namespaces for the same reason); the runtime is started only after :meth:`StepNetwork.wait_ready`.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading

from backend.errors import BackendError

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
GUEST_DNS = "10.0.2.3"
READY_TIMEOUT = 10.0
TUN = "/dev/net/tun"


class NetworkError(BackendError):
    """The step's private network could not be set up (the step does not run without it)."""


def _new_netns() -> int:
    """A new network namespace with ``lo`` up, as an fd; this process's own namespace is untouched."""
    result: dict = {}

    def worker() -> None:  # a thread of its own: unshare() changes only the calling thread's namespace
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
            result["fd"] = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                flags = struct.unpack("16sH14x", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH14x", b"lo", 0)))[1]
                fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = e

    t = threading.Thread(target=worker, name="netns", daemon=True)
    t.start()
    t.join()
    if "error" in result:
        if "fd" in result:
            os.close(result["fd"])
        raise NetworkError(f"cannot create a network namespace: {result['error']}")
    return result["fd"]


def resolv_conf(host_text: str) -> str:
    """The step's resolv.conf: slirp4netns's forwarder, plus the host's search and options lines."""
    keep = [line for line in host_text.splitlines() if line.split()[:1] in (["search"], ["domain"], ["options"])]
    return "\n".join([f"nameserver {GUEST_DNS}", *keep]) + "\n"


def _reap(proc: subprocess.Popen, log) -> None:
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    finally:
        if log is not None:
            log.close()


class StepNetwork:
    """One step's namespace and its slirp4netns; use as a context manager around the run."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.proc: subprocess.Popen | None = None
        self._ready_r = self._exit_w = -1
        self._log = None

    @property
    def path(self) -> str:
        return f"/proc/{os.getpid()}/fd/{self.fd}"

    def start(self) -> "StepNetwork":
        slirp = shutil.which("slirp4netns")
        if slirp is None:
            raise NetworkError("slirp4netns is not installed (apt-get install slirp4netns): it gives steps their "
                               "private network; use --network none or --network host (--allow network.host)")
        if not os.access(TUN, os.R_OK | os.W_OK):
            raise NetworkError(f"the step's private network needs {TUN}, which this user cannot open (udev makes it "
                               f"0666 on Debian: as root, chmod 0666 {TUN}); or build with --network none")
        self.fd = _new_netns()
        ready_r, ready_w = os.pipe()
        exit_r, exit_w = os.pipe()
        self._ready_r, self._exit_w = ready_r, exit_w
        self._log = tempfile.TemporaryFile()  # not a pipe: slirp4netns must never block on its own logging
        try:
            self.proc = subprocess.Popen(
                [slirp, "--configure", "--mtu=65520", "--disable-host-loopback", "--enable-sandbox",
                 "--enable-seccomp", f"--ready-fd={ready_w}", f"--exit-fd={exit_r}", "--netns-type=path",
                 f"/proc/self/fd/{self.fd}", "tap0"],
                pass_fds=(self.fd, ready_w, exit_r), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=self._log, start_new_session=True)
        except OSError as e:
            self.close()
            raise NetworkError(f"cannot start slirp4netns: {e}") from None
        finally:
            os.close(ready_w)
            os.close(exit_r)
        return self

    def wait_ready(self) -> None:
        """Block until slirp4netns has configured the namespace; a NetworkError if it could not."""
        import select

        if select.select([self._ready_r], [], [], READY_TIMEOUT)[0]:
            with contextlib.suppress(OSError):
                if os.read(self._ready_r, 1) == b"1":
                    return
        assert self.proc is not None
        err = b""
        if self.proc.poll() is not None:
            self._log.seek(0)
            err = self._log.read()[-400:]
        raise NetworkError("slirp4netns could not set up the step's network"
                           + (f": {err.decode(errors='replace').strip()}" if err else " (timed out)"))

    def close(self) -> None:
        if self._exit_w >= 0:  # slirp4netns exits when this closes
            os.close(self._exit_w)
            self._exit_w = -1
        if self.proc is not None:  # it takes ~30 ms to exit: reaped in the background, not waited for
            threading.Thread(target=_reap, args=(self.proc, self._log), name="slirp-reap", daemon=True).start()
            self.proc = self._log = None
        if self._log is not None:
            self._log.close()
            self._log = None
        for attr in ("_ready_r",):
            fd = getattr(self, attr)
            if fd >= 0:
                os.close(fd)
                setattr(self, attr, -1)
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "StepNetwork":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


class NetworkPool:
    """Step networks started ahead for one build: :meth:`take` hands out one that is (usually) ready
    and starts the next in the background, so a step does not wait for slirp4netns (~20-40 ms).

    Only the start-up is pooled, never a namespace: each step still gets a fresh one that no other step
    used, and an unused one is closed with the pool (and dies with irctl anyway, see the module doc)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spare: list[StepNetwork] = []
        self._closed = False

    def prestart(self) -> None:
        """Start one network in the background (errors are left for :meth:`take` to raise)."""
        threading.Thread(target=self._add, name="netns-prestart", daemon=True).start()

    def _add(self) -> None:
        try:
            net = StepNetwork().start()
        except NetworkError:
            return
        with self._lock:
            if not self._closed:
                self._spare.append(net)
                return
        net.close()

    def take(self) -> StepNetwork:
        with self._lock:
            net = self._spare.pop() if self._spare else None
            closed = self._closed
        if net is None:
            net = StepNetwork().start()
        if not closed:
            self.prestart()
        return net

    def close(self) -> None:
        with self._lock:
            self._closed = True
            spare, self._spare = self._spare, []
        for net in spare:
            net.close()
