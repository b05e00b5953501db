"""A graph's ``ulimits`` (``ExecOp.ulimits``, from ``--ulimit`` or a hostile IR file) against the
sandbox: a limit may not hand a step a privilege the sandbox withholds by dropping a capability."""

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
    assert {"type": "RLIMIT_MEMLOCK", "soft": spec.RLIM_INFINITY, "hard": spec.RLIM_INFINITY} in cfg["process"]["rlimits"]
    assert {"type": "RLIMIT_RTPRIO", "soft": 0, "hard": 0} in cfg["process"]["rlimits"]
