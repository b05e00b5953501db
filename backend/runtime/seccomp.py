"""Docker's default seccomp profile, turned into the runtime spec's ``linux.seccomp`` for one step.

Every step runs under it (not a ``security=insecure`` step: Docker and BuildKit drop seccomp there too).
The profile is ``seccomp_default.json`` beside this module: moby's ``profiles/seccomp/default.json``
exactly as Debian ships it in ``golang-github-docker-docker-dev`` 20.10.24+dfsg1-1+deb12u1 (Apache-2.0).
It is shipped rather than read from the host because (a) the only Debian package holding Docker's profile
as a file drags in ~260 Go packages, and ``containers-common``'s ``/usr/share/containers/seccomp.json`` is
*not* Docker's (it allows ``mount``, ``unshare``, ``keyctl``, ``ptrace`` and ``reboot`` to every
container), (b) the filter is part of what a build's steps can do, so it must not change with whatever a
host happens to have installed, and (c) BuildKit does the same (containerd's default profile is compiled
into it).  To refresh it: ``apt-get download golang-github-docker-docker-dev`` and copy that file.

On top of the file, :data:`EXTRA_DENIED` drops ``io_uring`` (moby removed it from its profile in 2023,
after this version).  The conversion follows the moby format's rules: a rule applies when the host's
architecture, the step's capability set (its bounding set) and the running kernel match its
``includes`` and none of its ``excludes``; ``archMap`` gives the host's architecture and its
sub-architectures.  A missing or unreadable profile, or an unknown host architecture, is an error
(:class:`SeccompError`): a step never runs unconfined because the filter could not be built.
"""

from __future__ import annotations

import functools
import json
import os
import platform
from pathlib import Path

from backend.errors import BackendError

PROFILE = Path(__file__).with_name("seccomp_default.json")
EXTRA_DENIED = frozenset({"io_uring_setup", "io_uring_enter", "io_uring_register"})

# uname machine → (libseccomp arch, the moby format's "native" arch name used in includes/excludes)
_ARCHES = {
    "x86_64": ("SCMP_ARCH_X86_64", "amd64"), "i686": ("SCMP_ARCH_X86", "x86"), "i386": ("SCMP_ARCH_X86", "x86"),
    "aarch64": ("SCMP_ARCH_AARCH64", "arm64"), "armv7l": ("SCMP_ARCH_ARM", "arm"),
    "armv6l": ("SCMP_ARCH_ARM", "arm"), "ppc64le": ("SCMP_ARCH_PPC64LE", "ppc64le"),
    "ppc64": ("SCMP_ARCH_PPC64", "ppc64"), "s390x": ("SCMP_ARCH_S390X", "s390x"),
    "mips64": ("SCMP_ARCH_MIPS64", "mips64"), "riscv64": ("SCMP_ARCH_RISCV64", "riscv64"),
}


class SeccompError(BackendError):
    """The seccomp filter could not be built; the step must not run without it."""


@functools.cache
def _profile() -> dict:
    try:
        data = json.loads(PROFILE.read_text())
    except (OSError, ValueError) as e:
        raise SeccompError(f"cannot load the default seccomp profile {PROFILE}: {e}; refusing to run a step "
                           "without it (reinstall irctl)") from None
    if not isinstance(data, dict) or not isinstance(data.get("syscalls"), list) or "defaultAction" not in data:
        raise SeccompError(f"{PROFILE}: not a seccomp profile in Docker's format")
    return data


def _kernel() -> tuple[int, int]:
    parts = platform.release().split(".")
    try:
        return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


def _min_kernel(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


@functools.cache
def linux_seccomp(caps: tuple[str, ...], machine: str | None = None) -> dict:
    """The ``linux.seccomp`` object for a step whose bounding set is ``caps`` on this host."""
    profile = _profile()
    machine = machine or os.uname().machine
    if machine not in _ARCHES:
        raise SeccompError(f"no seccomp architecture known for this host ({machine}); refusing to run "
                           "steps unconfined")
    scmp_arch, native = _ARCHES[machine]
    arches: list[str] = []
    for entry in profile.get("archMap") or ():
        if entry.get("architecture") == scmp_arch:
            arches = [scmp_arch, *entry.get("subArchitectures", ())]
    kernel = _kernel()
    have = set(caps)
    syscalls = []
    for rule in profile["syscalls"]:
        inc, exc = rule.get("includes") or {}, rule.get("excludes") or {}
        if native in (exc.get("arches") or ()) or have & set(exc.get("caps") or ()):
            continue
        if exc.get("minKernel") and kernel >= _min_kernel(exc["minKernel"]):
            continue
        if inc.get("arches") and native not in inc["arches"]:
            continue
        if not set(inc.get("caps") or ()) <= have:
            continue
        if inc.get("minKernel") and kernel < _min_kernel(inc["minKernel"]):
            continue
        names = list(rule.get("names") or ([rule["name"]] if rule.get("name") else []))
        if rule["action"] == "SCMP_ACT_ALLOW":
            names = [n for n in names if n not in EXTRA_DENIED]
        if not names:
            continue
        out = {"names": names, "action": rule["action"]}
        if rule.get("args"):
            out["args"] = [{k: a[k] for k in ("index", "value", "valueTwo", "op") if k in a} for a in rule["args"]]
        if rule.get("errnoRet") is not None:
            out["errnoRet"] = rule["errnoRet"]
        syscalls.append(out)
    result = {"defaultAction": profile["defaultAction"], "architectures": arches, "syscalls": syscalls}
    if profile.get("defaultErrnoRet") is not None:
        result["defaultErrnoRet"] = profile["defaultErrnoRet"]
    return result
