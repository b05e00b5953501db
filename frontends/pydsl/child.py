"""Inside the sandbox: run one Python build file and send back its IR (see :mod:`.sandbox`).

Started by the sandbox as ``python -I -B -c …``, with the request on stdin and replies on stdout,
framed by :mod:`.wire`.  Before the build file runs, the process forbids itself, with a seccomp
filter it cannot lift, every system call a build description has no use for and an escape would
want: new processes and threads (``fork``/``clone``: no fork bomb), ``execve``, sockets, namespace
and mount calls, ``ptrace``, ``bpf``, io_uring, keyrings.  The build file's ``print`` goes to stderr
(the parent shows it), never into the reply stream.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
import sys

from frontends import ResolvedImage
from frontends.errors import FrontendError
from frontends.pydsl import wire
from frontends.pydsl.load import compile_pydsl
from ir import codec, ops

# syscall numbers denied (EPERM) after start-up, per architecture; anything else is not run at all
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_DENIED = {
    # clone fork vfork execve execveat clone3 socket socketpair ptrace unshare setns mount umount2
    # pivot_root bpf userfaultfd io_uring_setup keyctl add_key request_key perf_event_open
    "x86_64": (56, 57, 58, 59, 322, 435, 41, 53, 101, 272, 308, 165, 166, 155, 321, 323, 425, 250, 248, 249, 298),
    "aarch64": (220, 221, 281, 435, 198, 199, 117, 97, 268, 40, 39, 41, 280, 282, 425, 219, 217, 218, 241),
}


def _bpf(arch: str) -> bytes:
    """A classic-BPF seccomp program: wrong architecture (or x32) kills, a denied call gets EPERM."""
    ld_w_abs, jeq_k, jge_k, ret_k = 0x20, 0x15, 0x35, 0x06
    kill, allow, eperm = 0x80000000, 0x7FFF0000, 0x00050000 | 1
    denied = _DENIED[arch]
    prog = [(ld_w_abs, 0, 0, 4), (jeq_k, 1, 0, _AUDIT_ARCH[arch]), (ret_k, 0, 0, kill), (ld_w_abs, 0, 0, 0)]
    if arch == "x86_64":
        prog += [(jge_k, 0, 1, 0x40000000), (ret_k, 0, 0, kill)]
    n = len(denied)
    for i, nr in enumerate(denied):
        prog.append((jeq_k, n - i, 0, nr))  # to the EPERM return after the ALLOW
    prog += [(ret_k, 0, 0, allow), (ret_k, 0, 0, eperm)]
    return b"".join(struct.pack("HBBI", *ins) for ins in prog)


def lock_down() -> None:
    arch = platform.machine()
    if arch not in _DENIED:
        raise SystemExit(f"the Python DSL sandbox has no seccomp filter for {arch}")
    code = _bpf(arch)
    buf = ctypes.create_string_buffer(code)
    fprog = struct.pack("HxxxxxxP", len(code) // 8, ctypes.addressof(buf))
    fbuf = ctypes.create_string_buffer(fprog)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0 or \
            libc.prctl(pr_set_seccomp, seccomp_mode_filter, ctypes.addressof(fbuf), 0, 0) != 0:
        raise SystemExit(f"seccomp: {os.strerror(ctypes.get_errno())}")


class _ParentResolver:
    """The ImageResolver the build file's stages see: every question goes to the parent."""

    def __init__(self, chan: wire.Channel) -> None:
        self.chan = chan

    def _ask(self, msg: dict):
        self.chan.send(msg)
        reply = self.chan.receive()
        if "error" in reply:
            raise FrontendError(str(reply["error"]))
        r = reply["ok"]
        return ResolvedImage(r["ref"], r["digest"], r["config"], ops.Platform(*r["platform"]))

    def resolve_image(self, ref, platform):
        return self._ask({"op": "resolve_image", "ref": ref, "platform": wire.platform_out(platform)})

    def resolve_oci_layout(self, name, ref, platform):
        return self._ask({"op": "resolve_oci_layout", "name": name, "ref": ref,
                          "platform": wire.platform_out(platform)})


def main() -> None:
    chan = wire.Channel(os.fdopen(os.dup(0), "rb", buffering=0), os.fdopen(os.dup(1), "wb", buffering=0))
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(2, 1)  # print() in the build file: to stderr, never into the reply stream
    sys.stdout = sys.stderr
    request = wire.request_in(chan.receive())
    lock_down()
    chan.send({"op": "ready"})
    try:
        compiled = compile_pydsl(request, _ParentResolver(chan))
        doc = codec.dump_document(compiled.document, compress=False)
    except FrontendError as e:
        chan.send({"op": "fail", "message": str(e)})
        return
    except MemoryError:
        chan.send({"op": "fail", "message": f"{request.filename}: the build file ran out of memory in the sandbox"})
        return
    chan.send({"op": "done", "document": doc, "warnings": list(compiled.warnings)})


if __name__ == "__main__":
    main()
