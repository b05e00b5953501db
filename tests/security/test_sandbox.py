"""The step sandbox, as root and rootless: Docker's seccomp profile, Docker's capabilities without
CAP_NET_RAW, no_new_privileges, masked /proc paths, a pids limit and a default size for tmpfs mounts.

Each case runs a real build whose step probes the limit from inside and writes what it saw."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backend.runtime import spec
from backend.runtime import seccomp
from tests.rootless.conftest import user_cli  # noqa: F401  (fixture)
from tests.security.sandbox_support import builder  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e

CAP_NET_RAW, CAP_SYS_ADMIN = 13, 21


def _status(text: str) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def test_step_has_no_new_privs_seccomp_and_no_net_raw(builder):
    r, out = builder.build("FROM busybox\nRUN mkdir /r && cat /proc/self/status > /r/status\n"
                           "USER nobody\nRUN cat /proc/self/status > /tmp/status-nobody\n")
    assert r.code == 0, r.stderr
    st = _status((out / "r" / "status").read_text())
    assert st["NoNewPrivs"] == "1"
    assert st["Seccomp"] == "2"  # a filter is installed
    for field in ("CapEff", "CapBnd", "CapPrm"):
        caps = int(st[field], 16)
        assert not caps >> CAP_NET_RAW & 1, (field, st[field])
        assert not caps >> CAP_SYS_ADMIN & 1, (field, st[field])
    expected = sum(1 << spec._CAPS_BY_NUMBER.index(c) for c in spec.DEFAULT_CAPABILITIES)
    assert int(st["CapBnd"], 16) == expected
    nobody = _status((out / "tmp" / "status-nobody").read_text())
    assert nobody["NoNewPrivs"] == "1" and nobody["Seccomp"] == "2" and int(nobody["CapEff"], 16) == 0


def test_raw_sockets_are_refused(builder):
    # arping opens an AF_PACKET socket, ping (busybox) a raw ICMP one: both need CAP_NET_RAW
    r, out = builder.build("FROM busybox\nRUN mkdir /r; arping -c 1 -w 1 -I lo 127.0.0.1 > /r/arping 2>&1; "
                           "echo $? >> /r/arping; traceroute -n -m 1 -w 1 127.0.0.1 > /r/trace 2>&1; "
                           "echo $? >> /r/trace\n")
    assert r.code == 0, r.stderr
    for name in ("arping", "trace"):
        text = (out / "r" / name).read_text()
        assert text.splitlines()[-1] != "0", text
        assert "not permitted" in text or "denied" in text, text


@pytest.mark.parametrize("probe, why", [
    ("unshare -U true", "a new user namespace (the route to kernel attack surface Docker's profile closes)"),
    ("unshare -m true", "a new mount namespace"),
    ("unshare -n true", "a new network namespace"),
    ("mount -t tmpfs none /mnt", "mount"),
    ("nsenter -t 1 -U true", "setns"),
])
def test_seccomp_blocks_what_docker_blocks(builder, probe, why):
    r, out = builder.build(f"FROM busybox\nRUN mkdir /r; {probe} > /r/log 2>&1; echo $? >> /r/log\n")
    assert r.code == 0, r.stderr
    text = (out / "r" / "log").read_text()
    assert text.splitlines()[-1] != "0", f"{why} was allowed: {text}"


def _readable(path: str) -> bool:
    try:
        return bool(Path(path).read_bytes())
    except OSError:  # a non-root test user may not read them on the host either
        return False


def test_masked_and_readonly_proc_paths(builder):
    files = [f for f in spec.MASKED_PATHS if os.path.isfile(f) and _readable(f)]
    assert files, "no masked /proc file to read on this host"
    reads = "; ".join(f"wc -c < {f} >> /r/masked" for f in files)
    r, out = builder.build(f"FROM busybox\nRUN mkdir /r; {reads}; "
                           "find /proc/acpi /sys/firmware -mindepth 1 2>/dev/null | wc -l > /r/listed; "
                           "(echo 1 > /proc/sys/kernel/panic) 2>/dev/null; echo $? > /r/sysctl; "
                           "(echo b > /proc/sysrq-trigger) 2>/dev/null; echo $? > /r/sysrq\n")
    assert r.code == 0, r.stderr
    assert (out / "r" / "masked").read_text().split() == ["0"] * len(files), files
    assert (out / "r" / "listed").read_text().strip() == "0"
    assert (out / "r" / "sysctl").read_text().strip() != "0"
    assert (out / "r" / "sysrq").read_text().strip() != "0"


def test_fork_bomb_is_bounded(builder):
    # spawn more sleepers than the limit allows; count them with a glob (no fork needed at the limit)
    n = spec.PIDS_LIMIT + 500
    script = (f"( i=0; while [ $i -lt {n} ]; do sleep 120 & i=$((i+1)); done ) 2>/dev/null; "
              "set -- /proc/[0-9]*; echo $# > /procs; kill -9 -1; true")
    r, out = builder.build(f"FROM busybox\nRUN {script}\n", timeout=600)
    assert r.code == 0, r.stderr
    procs = int((out / "procs").read_text())
    assert spec.PIDS_LIMIT // 2 < procs <= spec.PIDS_LIMIT, procs


def test_fork_bomb_ends_with_an_error(builder):
    r, _ = builder.build("FROM busybox\nRUN i=0; while [ $i -lt 6000 ]; do sleep 120 & i=$((i+1)); done\n",
                         timeout=600)
    assert r.code != 0
    assert "can't fork" in r.stderr or "Resource temporarily unavailable" in r.stderr, r.stderr[-2000:]


def test_tmpfs_without_size_gets_the_default(builder):
    r, out = builder.build("FROM busybox\nRUN --mount=type=tmpfs,target=/t grep ' /t ' /proc/mounts > /mounts; "
                           "df -k /t | tail -1 > /df\n"
                           "RUN --mount=type=tmpfs,target=/u,size=8m grep ' /u ' /proc/mounts > /mounts-sized\n")
    assert r.code == 0, r.stderr
    mounts = (out / "mounts").read_text()
    assert f"size={spec.DEFAULT_TMPFS_SIZE // 1024}k" in mounts, mounts
    assert int((out / "df").read_text().split()[1]) == spec.DEFAULT_TMPFS_SIZE // 1024
    assert "size=8192k" in (out / "mounts-sized").read_text()


def test_insecure_step_runs_without_the_filter(builder):
    """The control: security=insecure (granted) runs without the filter, with every capability and
    without no_new_privileges (so the probes above can tell)."""
    r, out = builder.build("FROM busybox\nRUN --security=insecure grep -E 'Seccomp:|CapBnd|NoNewPrivs' /proc/self/status "
                           "> /status\n", "--allow", "security.insecure")
    assert r.code == 0, r.stderr
    st = _status((out / "status").read_text())
    assert st["Seccomp"] == "0" and st["NoNewPrivs"] == "0"
    assert int(st["CapBnd"], 16) >> CAP_SYS_ADMIN & 1


# ------------------------------------------------------------------------------------------ units

def test_seccomp_rules_follow_the_capability_set():
    plain = seccomp.linux_seccomp(spec.DEFAULT_CAPABILITIES, "x86_64")
    admin = seccomp.linux_seccomp((*spec.DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"), "x86_64")
    allowed = {n for r in plain["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]}
    admin_allowed = {n for r in admin["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]}
    assert plain["defaultAction"] == "SCMP_ACT_ERRNO"
    assert plain["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    for name in ("mount", "unshare", "setns", "bpf", "keyctl", "add_key", "ptrace" if False else "kexec_load",
                 "io_uring_setup", "init_module", "reboot", "pivot_root"):
        assert name not in allowed, name
    assert {"mount", "unshare", "setns"} <= admin_allowed
    assert {"read", "write", "clone", "socket", "execve"} <= allowed
    # clone3 answers ENOSYS, so libc falls back to clone (which is allowed without namespace flags)
    assert any("clone3" in r["names"] and r.get("errnoRet") == 38 for r in plain["syscalls"])


def test_no_profile_fails_closed(monkeypatch, tmp_path):
    seccomp._profile.cache_clear()
    seccomp.linux_seccomp.cache_clear()
    monkeypatch.setattr(seccomp, "PROFILE", tmp_path / "missing.json")
    try:
        with pytest.raises(spec.ContainerStartError, match="seccomp profile"):
            spec.config_for(tmp_path, spec.Process(args=["true"]), [], network="none", hostname="h", extra_files={})
        monkeypatch.undo()
        seccomp._profile.cache_clear()
        with pytest.raises(seccomp.SeccompError, match="architecture"):
            seccomp.linux_seccomp(spec.DEFAULT_CAPABILITIES, "vax")
    finally:
        seccomp._profile.cache_clear()
        seccomp.linux_seccomp.cache_clear()
