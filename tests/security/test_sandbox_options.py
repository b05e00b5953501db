"""A graph's ``ulimits`` and ``extra_hosts`` (from ``--ulimit``/``--add-host`` or a hostile IR file)
against the sandbox: a limit may not hand a step a privilege the sandbox withholds by dropping a
capability, and an address may not carry more than one field into the step's /etc/hosts."""

from __future__ import annotations

import resource

import pytest

from backend.runtime import spec


def _config(tmp_path, rlimits):
    return spec.config_for(tmp_path, spec.Process(["true"], rlimits=rlimits), [], network="host", hostname="h",
                           extra_files={}, rootless=False)


@pytest.mark.parametrize("name, value", [("rtprio", 99), ("rtprio", -1), ("nice", 40)])
def test_root_with_sys_resource_still_cannot_grant_a_step_real_time_or_raised_priority(tmp_path, monkeypatch,
                                                                                      name, value):
    """RLIMIT_RTPRIO lets a process without CAP_SYS_NICE take SCHED_FIFO up to the limit (a busy
    loop at priority 99 then starves the host's own processes on every core it spins on), RLIMIT_NICE
    a nice value below 0: what dropping CAP_SYS_NICE keeps from a step.  Even where irctl could raise
    them (root with CAP_SYS_RESOURCE), a graph may not go above irctl's own limit."""
    monkeypatch.setattr(spec, "_has_sys_resource", lambda: True)
    own = resource.getrlimit(getattr(resource, f"RLIMIT_{name.upper()}"))[1]
    if own == resource.RLIM_INFINITY or (value != -1 and own >= value):
        pytest.skip(f"this process may already use {name} {value} itself (hard limit {own})")
    with pytest.raises(spec.ContainerStartError, match=f"--ulimit {name}=.*CAP_SYS_NICE"):
        _config(tmp_path, [(name, value, value)])


def test_root_with_sys_resource_may_still_raise_other_limits(tmp_path, monkeypatch):
    monkeypatch.setattr(spec, "_has_sys_resource", lambda: True)
    cfg = _config(tmp_path, [("memlock", -1, -1), ("rtprio", 0, 0)])
    unlimited = spec.RLIM_INFINITY
    assert {"type": "RLIMIT_MEMLOCK", "soft": unlimited, "hard": unlimited} in cfg["process"]["rlimits"]
    assert {"type": "RLIMIT_RTPRIO", "soft": 0, "hard": 0} in cfg["process"]["rlimits"]


@pytest.mark.parametrize("ip", ["fe80::1%\n6.6.6.6\tbank.example", "fe80::1%\x1b]0;owned\x07", "fe80::1%eth0"])
def test_an_address_with_a_zone_is_refused_by_every_ir_reader(tmp_path, ip):
    """Python's ``ipaddress`` takes anything after ``%`` as an IPv6 zone (a newline, a tab, an escape
    sequence), which would reach the step's /etc/hosts: refused where every IR reader checks, with its
    key path (Docker's ``--add-host`` takes no zone either)."""
    from ir import builder, ops
    from ir.codec import dump_document
    from tests.support.cli import irctl

    st = builder.scratch().run(["/bin/true"])
    body = ops.replace(st.vertex.op.exec, extra_hosts=(ops.HostIP("db", ip),))
    doc = builder.build_document({"default": st._next(builder.vertex("exec", body, [(builder.scratch().vertex, 0)]))})
    path = tmp_path / "hostile.ir"
    path.write_bytes(dump_document(doc))
    r = irctl("validate", path, env={"IRCTL_CACHE_DIR": str(tmp_path / "cache")})
    assert r.code == 2 and ".exec.extra_hosts[0].ip: " in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    assert "\x1b" not in r.stderr


def test_add_host_with_a_zone_is_refused_on_the_command_line():
    from irctl.buildx_flags import extra_hosts
    from irctl.errors import UserError

    with pytest.raises(UserError, match=r"--add-host db:fe80::1%eth0: invalid IP address"):
        extra_hosts(["db:fe80::1%eth0"])
    assert [h.ip for h in extra_hosts(["db:[fe80::1]"])] == ["fe80::1"]
