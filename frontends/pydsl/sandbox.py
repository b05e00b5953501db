"""Run a Python build file the way BuildKit runs a ``# syntax=`` frontend: in a sandbox, never on the host.

A ``build.py`` is a program from the untrusted side.  It runs in a child Python under bubblewrap
(``bwrap``) with new user, pid, network, ipc, uts and cgroup namespaces (no network at all), every
capability dropped, ``--die-with-parent`` and ``--new-session`` (no TIOCSTI into the caller's
terminal), an empty environment, a read-only root holding only what it imports — the Python
standard library, the ``frontends`` and ``ir`` packages and their three libraries (msgspec,
msgpack, typing_extensions), each bound read-only — and a small private tmpfs at ``/tmp``: no
``$HOME``, no context, no cache, no ``/etc``.  Resource limits: CPU time, address space, file size,
open files, and a wall-clock timeout; the child's seccomp filter (:mod:`.child`) refuses new
processes, threads, sockets and namespace calls.

The child gets the :class:`~frontends.BuildRequest` over a pipe and answers with the compiled
document as IR bytes and its warnings (:mod:`.wire`).  While lowering it may ask about base images;
those questions come back over the same pipe and the parent answers them with the real resolver —
the only thing the child can make the parent do.  Everything it sends is hostile: frames are
size-limited, every field type-checked, the document is decoded and validated like any untrusted IR
file, warnings are cut and stripped of control characters.

If bwrap is missing or cannot create the namespaces, the build fails with the reason: the Python
DSL is never run unsandboxed.  ``IRCTL_PYDSL_TIMEOUT`` (seconds, default 60) sets the CPU and
wall-clock limits.
"""

from __future__ import annotations

import importlib.util
import os
import re
import resource
import selectors
import shutil
import signal
import site
import subprocess
import sys
import threading
import time
from pathlib import Path

from frontends import BuildRequest, Compiled, ImageResolver
from frontends.errors import FrontendError
from frontends.pydsl import wire
from ir import ops
from ir.errors import IRError
from ir.validate import load_and_validate

MEMORY = 1 << 30  # address space of the child (RLIMIT_AS)
TMPFS = 16 << 20  # its /tmp
MAX_RESOLVES = 4096
MAX_WARNINGS, MAX_WARNING = 1000, 4096
MAX_STDERR = 64 << 10  # what the parent keeps of the build file's own output
_LIBRARIES = ("msgspec", "msgpack", "typing_extensions")
_PACKAGES = ("frontends", "ir")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_BOOT = ("import sys; sys.path[:0] = ['/irctl', '/irctl/lib']; "
         "from frontends.pydsl.child import main; main()")
# As root, the sandbox's user namespace maps its uid to the caller's: uid 65534 inside was root
# outside, and read every root-owned file the bound directories hold (mode 0600 included).  So as
# root irctl writes the map itself — 0 and 65534 to themselves — and the child's first act is to
# become 65534 (the host's nobody), keeping only CAP_SETUID/CAP_SETGID until then (and to close the
# end of the map pipe bwrap leaves open).
_DROP = ("import os; os.closerange(3, 65536); os.setgroups([]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534); "
         "assert os.getresuid() == (65534,) * 3; ")
NOBODY_MAP = "0 0 1\n65534 65534 1\n"


def _timeout() -> float:
    try:
        return max(1.0, float(os.environ.get("IRCTL_PYDSL_TIMEOUT", "60")))
    except ValueError:
        return 60.0


def _module_path(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise FrontendError(f"the Python DSL sandbox needs the module {name!r}, which is not installed")
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(spec.origin)


def bwrap_argv(bwrap: str, map_fds: tuple[int, int] | None = None) -> list[str]:
    """The bubblewrap command line (without the Python command).  ``map_fds`` (as root): the
    (block, info) pipe ends through which irctl writes the user namespace's map (see ``_DROP``)."""
    if map_fds is None:
        user = ["--disable-userns", "--cap-drop", "ALL", "--uid", "65534", "--gid", "65534"]
    else:  # --disable-userns cannot go with a map written from outside; the child's seccomp refuses unshare
        user = ["--userns-block-fd", str(map_fds[0]), "--info-fd", str(map_fds[1]), "--cap-drop", "ALL",
                "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    argv = [bwrap, "--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            "--unshare-cgroup", *user, "--die-with-parent", "--new-session",
            "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8",
            "--setenv", "HOME", "/tmp", "--hostname", "pydsl"]
    for top in ("bin", "lib", "lib32", "lib64", "libx32", "sbin"):
        p = Path("/", top)
        if p.is_symlink():
            argv += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            argv += ["--ro-bind", str(p), str(p)]
    prefixes = {"/usr"} | {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, Path(sys.executable).parent)}
    bound: list[str] = []
    for p in sorted(prefixes, key=len):
        if Path(p).is_dir() and not any(p == b or p.startswith(b + "/") for b in bound):
            argv += ["--ro-bind", p, p]
            bound.append(p)
    # the installed packages stay hidden: only the libraries the child imports are bound, at /irctl/lib
    hidden = {os.path.realpath(s) for s in [*site.getsitepackages(), site.getusersitepackages()]}
    for s in sorted(hidden):
        if Path(s).is_dir() and any(s.startswith(b + "/") for b in bound):
            argv += ["--tmpfs", s]
    for name in _PACKAGES:
        argv += ["--ro-bind", str(_module_path(name)), f"/irctl/{name}"]
    for name in _LIBRARIES:
        path = _module_path(name)
        argv += ["--ro-bind", str(path), f"/irctl/lib/{path.name}"]
        if path.is_file():  # a one-file module: its bytecode too, when there is some (saves ~50 ms)
            pyc = Path(importlib.util.cache_from_source(str(path)))
            if pyc.is_file():
                argv += ["--ro-bind", str(pyc), f"/irctl/lib/__pycache__/{pyc.name}"]
    argv = _open_parents(argv)
    argv += ["--dev", "/dev", "--perms", "1777", "--size", str(TMPFS), "--tmpfs", "/tmp", "--remount-ro", "/dev", "--remount-ro", "/",
             "--chdir", "/tmp"]
    return argv


def _open_parents(argv: list[str]) -> list[str]:
    """``argv`` with a ``--perms 0755 --dir`` for every directory bwrap would create above a bind's
    destination (it makes them 0700, which the child, 65534 as root, could not pass)."""
    out: list[str] = []
    made: set[str] = set()
    i = 0
    while i < len(argv):
        if argv[i] in ("--ro-bind", "--tmpfs", "--symlink"):
            dest = argv[i + (1 if argv[i] == "--tmpfs" else 2)]
            for parent in reversed(Path(dest).parents):
                p = str(parent)
                if p != "/" and p not in made:
                    made.add(p)
                    out += ["--perms", "0755", "--dir", p]
            made.add(dest)
        out.append(argv[i])
        i += 1
    return out


def _limits(seconds: float) -> None:
    """In the child before exec (``preexec_fn``): resource limits it cannot raise again."""
    cpu = int(seconds) + 1
    for which, value in ((resource.RLIMIT_CPU, (cpu, cpu + 1)), (resource.RLIMIT_AS, (MEMORY, MEMORY)),
                         (resource.RLIMIT_FSIZE, (TMPFS, TMPFS)), (resource.RLIMIT_NOFILE, (64, 64)),
                         (resource.RLIMIT_CORE, (0, 0))):
        resource.setrlimit(which, value)


def _clean(text: str, limit: int = MAX_WARNING) -> str:
    return _CONTROL.sub("?", text[:limit])


def _lookup_failed(n: int) -> str:
    """What the child is told instead of the resolver's error (replaced by it in the message the
    user sees)."""
    return f"image lookup #{n} failed (irctl shows why)"


class _TimedChannel(wire.Channel):
    """The parent's end: every read and write waits at most until the child's deadline, so a child
    that sends half a frame, or stops reading its answers, cannot hang irctl."""

    def __init__(self, child: "_Child") -> None:
        super().__init__(child.proc.stdout, child.proc.stdin, hostile=True)
        self.child = child
        os.set_blocking(child.proc.stdin.fileno(), False)  # type: ignore[union-attr]

    def _wait(self, fileobj, event: int) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(fileobj, event)
            if not sel.select(max(self.child.left(), 0.0)):
                self.child.kill()
                raise FrontendError(f"{self.child.name}: the build file ran longer than {self.child.seconds:g} s "
                                    "in the sandbox")

    def _read(self, n: int) -> bytes:
        self._wait(self.reader, selectors.EVENT_READ)
        return self.reader.read(n)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            self._wait(self.writer, selectors.EVENT_WRITE)
            try:
                view = view[os.write(self.writer.fileno(), view):]
            except BlockingIOError:
                continue


class _Child:
    def __init__(self, request: BuildRequest, resolver: ImageResolver) -> None:
        self.request = request
        self.resolver = resolver
        self.name = request.filename
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise FrontendError(f"{self.name}: the Python DSL runs only in a sandbox, and bubblewrap (bwrap) is not "
                                "installed; install it (Debian: apt-get install bubblewrap)")
        self.seconds = _timeout()
        root = os.geteuid() == 0
        block, info = (os.pipe(), os.pipe()) if root else ((-1, -1), (-1, -1))
        argv = bwrap_argv(bwrap, (block[0], info[1]) if root else None) + [
            os.path.realpath(sys.executable), "-I", "-S", "-B", "-c", (_DROP if root else "") + _BOOT]
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         bufsize=0, preexec_fn=lambda: _limits(self.seconds), start_new_session=True,
                                         pass_fds=(block[0], info[1]) if root else ())
        finally:
            for fd in (block[0], info[1]):
                if fd >= 0:
                    os.close(fd)
        if root:
            self._map_user_namespace(block[1], info[0])
        self.stderr = bytearray()
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()
        self.waited = 0.0  # time spent answering the child's questions: not the child's
        self.lookup_errors: list[str] = []  # the resolver's errors, kept from the child (see answer)
        self.started = time.monotonic()
        self.chan = _TimedChannel(self)

    def _map_user_namespace(self, block_w: int, info_r: int) -> None:
        """Write the sandbox's uid and gid maps (root: ``NOBODY_MAP``), then let bwrap go on.  bwrap
        reports its child's pid on ``info_r`` first; if it fails before that, the run fails at start."""
        import json

        try:
            data = b""
            with selectors.DefaultSelector() as sel:
                sel.register(info_r, selectors.EVENT_READ)
                while not data.rstrip().endswith(b"}") and len(data) < 65536 and sel.select(10):
                    chunk = os.read(info_r, 4096)
                    if not chunk:
                        break
                    data += chunk
            try:
                pid = int(json.loads(data)["child-pid"])
            except (ValueError, KeyError, TypeError):
                self.kill()  # bwrap stopped (or stalled) before its namespaces existed: a start failure
                return
            for name in ("uid_map", "gid_map"):
                with open(f"/proc/{pid}/{name}", "w") as f:
                    f.write(NOBODY_MAP)
            os.write(block_w, b"1")
        except OSError:
            self.kill()  # no map: the sandbox must not start
        finally:
            os.close(block_w)
            os.close(info_r)

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for chunk in iter(lambda: self.proc.stderr.read(65536), b""):
            room = MAX_STDERR - len(self.stderr)
            if room > 0:
                self.stderr += chunk[:room]

    def output(self) -> str:
        """What the build file printed (cut at MAX_STDERR, control characters replaced)."""
        return _clean(bytes(self.stderr).decode("utf-8", "replace"), MAX_STDERR).strip()

    def left(self) -> float:
        """Seconds of the wall-clock budget left (time spent in the parent's resolver not counted)."""
        return self.seconds - (time.monotonic() - self.started - self.waited)

    def receive(self) -> dict:
        """The child's next frame, within the wall-clock budget."""
        return self.chan.receive()

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()

    def died(self, what: str) -> FrontendError:
        self.kill()
        self.reader.join(timeout=5)
        code = self.proc.returncode
        out = self.output()
        if code is not None and code < 0:
            sig = -code
            if sig == signal.SIGXCPU:
                why = f"the build file used more than {int(self.seconds) + 1} s of CPU time in the sandbox"
            else:
                why = f"the sandboxed build file was killed by {signal.Signals(sig).name}"
        elif what == "start":
            why = ("the Python DSL runs only in a sandbox, and bubblewrap could not create one"
                   + (f": {out.splitlines()[-1]}" if out else "") + " (it never runs unsandboxed; rootless hosts "
                   "need unprivileged user namespaces: sysctl kernel.unprivileged_userns_clone=1)")
            return FrontendError(f"{self.name}: {why}")
        else:
            why = f"the sandboxed build file stopped ({what})"
        tail = "\n".join(out.splitlines()[-5:])
        self.stderr.clear()  # shown here, not again
        return FrontendError(f"{self.name}: {why}" + (f"\noutput (last lines):\n{tail}" if tail else ""))

    def answer(self, msg: dict) -> None:
        """A resolver question from the child: checked, answered by the real resolver, or refused."""
        op = msg.get("op")
        ref, plat = msg.get("ref"), msg.get("platform")
        if not (isinstance(ref, str) and len(ref) <= 4096 and isinstance(plat, list) and len(plat) == 3
                and all(isinstance(p, str) and len(p) <= 256 for p in plat)):
            raise wire.WireError(f"a malformed {op} request")
        platform = ops.Platform(*plat)
        t = time.monotonic()
        try:
            if op == "resolve_image" and set(msg) == {"op", "ref", "platform"}:
                r = self.resolver.resolve_image(ref, platform)
            elif op == "resolve_oci_layout" and set(msg) == {"op", "name", "ref", "platform"} \
                    and isinstance(msg["name"], str) and len(msg["name"]) <= 4096:
                r = self.resolver.resolve_oci_layout(msg["name"], ref, platform)
            else:
                raise wire.WireError(f"a request the sandbox does not answer ({str(op)[:40]!r})")
        except wire.WireError:
            raise
        except Exception as e:  # the resolver's own error: the child reports it at the line that asked
            # but never learns its text: a registry's error body (a loopback service's answer) must
            # not reach a program that can write it into the image; irctl shows it if the build fails
            self.lookup_errors.append(_clean(str(e), 1024))
            self.chan.send({"error": _lookup_failed(len(self.lookup_errors))})
            return
        finally:
            self.waited += time.monotonic() - t
        self.chan.send({"ok": {"ref": r.ref, "digest": r.digest, "config": r.config,
                               "platform": wire.platform_out(r.platform)}})

    def run(self) -> Compiled:
        try:
            try:
                self.chan.send(wire.request_out(self.request))
                hello = self.receive()
            except (EOFError, BrokenPipeError, wire.WireError):
                raise self.died("start") from None
            if hello != {"op": "ready"}:
                raise self.died("it did not start the protocol")
            resolves = 0
            while True:
                try:
                    msg = self.receive()
                except (EOFError, BrokenPipeError):
                    raise self.died("it closed the pipe") from None
                op = msg.get("op")
                if op in ("resolve_image", "resolve_oci_layout"):
                    resolves += 1
                    if resolves > MAX_RESOLVES:
                        raise wire.WireError(f"more than {MAX_RESOLVES} image lookups")
                    self.answer(msg)
                elif op == "fail" and set(msg) == {"op", "message"} and isinstance(msg["message"], str):
                    text = _clean(msg["message"], 16384)
                    for i, e in enumerate(self.lookup_errors[:64], 1):  # the child saw placeholders
                        text = text.replace(_lookup_failed(i), e)
                    raise FrontendError(text)
                elif op == "done" and set(msg) == {"op", "document", "warnings"} \
                        and isinstance(msg["document"], bytes) and isinstance(msg["warnings"], list):
                    warnings = msg["warnings"]
                    if len(warnings) > MAX_WARNINGS or not all(isinstance(w, str) for w in warnings):
                        raise wire.WireError("malformed warnings")
                    try:
                        doc = load_and_validate(msg["document"])
                    except (IRError, ValueError) as e:
                        raise FrontendError(f"{self.name}: the sandbox returned an invalid IR document: {e}") from None
                    return Compiled(doc, tuple(_clean(w) for w in warnings))
                else:
                    raise wire.WireError(f"an unexpected message ({str(op)[:40]!r})")
        except wire.WireError as e:
            self.kill()
            raise FrontendError(f"{self.name}: the sandboxed build file broke the protocol: {e}") from None
        finally:
            self.kill()
            self.reader.join(timeout=5)
            for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                try:
                    f.close()  # type: ignore[union-attr]
                except OSError:
                    pass
            out = self.output()
            if out:
                sys.stderr.write(out + "\n")


def compile_sandboxed(request: BuildRequest, resolver: ImageResolver) -> Compiled:
    """Compile a Python build file in the sandbox (see the module docstring)."""
    return _Child(request, resolver).run()
