"""--add-host, --shm-size and --ulimit inside a real RUN, as root and rootless: the step's
/etc/hosts, /dev/shm and rlimits are what the flags said, and the defaults when not given."""

from __future__ import annotations

import pytest

from tests.rootless.conftest import user_cli  # noqa: F401  (fixture)
from tests.security.sandbox_support import builder  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e

_PROBE = ("mkdir /r; cat /etc/hosts > /r/hosts; df -k /dev/shm | tail -n 1 > /r/shm; "
          "ulimit -n > /r/nofile; ulimit -Hn > /r/nofile_hard; ulimit -c > /r/core")


def _shm_kib(out) -> int:
    return int((out / "r" / "shm").read_text().split()[1])


def test_run_sees_the_hosts_shm_size_and_limits_it_was_given(builder):
    r, out = builder.build(f"FROM busybox\nRUN {_PROBE}\n", "--add-host", "db:10.0.0.7", "--add-host", "v6=[fd00::7]",
                           "--shm-size", "96m", "--ulimit", "nofile=1024:2048", "--ulimit", "core=0")
    assert r.code == 0, r.stderr
    hosts = (out / "r" / "hosts").read_text().splitlines()
    assert hosts[-2:] == ["10.0.0.7\tdb", "fd00::7\tv6"], hosts
    assert hosts[0] == "127.0.0.1\tlocalhost"
    assert _shm_kib(out) == 96 * 1024
    assert [(out / "r" / n).read_text().strip() for n in ("nofile", "nofile_hard", "core")] == ["1024", "2048", "0"]
    # without the flags: Docker's defaults, and a different step (the options are in its cache key)
    r, out = builder.build(f"FROM busybox\nRUN {_PROBE}\n")
    assert r.code == 0 and "CACHED" not in r.stderr.split("RUN mkdir", 1)[1].split("\n#", 2)[1], r.stderr
    assert len((out / "r" / "hosts").read_text().splitlines()) == 3
    assert _shm_kib(out) == 64 * 1024
    assert (out / "r" / "nofile").read_text().strip() != "1024"


def _has_sys_resource() -> bool:
    eff = next(int(line.split()[1], 16) for line in open("/proc/self/status") if line.startswith("CapEff:"))
    return bool(eff >> 24 & 1)


def test_a_limit_above_the_builders_own_is_refused_unless_it_may_raise_it(builder):
    """memlock unlimited: root with CAP_SYS_RESOURCE may raise it; a rootless build (or root without
    that capability, as in some CI containers) cannot raise a hard limit above its own, and says so
    instead of failing in runc's setrlimit."""
    r, out = builder.build("FROM busybox\nRUN mkdir /r && ulimit -l > /r/memlock\n", "--ulimit", "memlock=-1")
    if builder.mode == "root" and _has_sys_resource():
        assert r.code == 0, r.stderr
        assert (out / "r" / "memlock").read_text().strip() == "unlimited"
    else:
        who = "a rootless build" if builder.mode == "rootless" else "irctl without CAP_SYS_RESOURCE"
        assert r.code != 0
        assert f"--ulimit memlock=-1:-1: {who} cannot raise the hard limit above its own" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr


def test_rootless_nproc_stays_under_the_sandboxs_bound(tmp_path, monkeypatch):
    """Rootless there is no pids cgroup: RLIMIT_NPROC is the fork-bomb bound, and a step's --ulimit
    nproc (from a hostile graph too) may lower it but never lift it."""
    import resource

    from backend.runtime import spec

    own = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    high = spec.RLIM_INFINITY if own == resource.RLIM_INFINITY else own
    if high <= spec.PIDS_LIMIT:
        pytest.skip(f"this process's own nproc hard limit ({own}) is already under PIDS_LIMIT")
    monkeypatch.setattr(spec, "read_id_map", lambda kind: [(0, 0, 1)])
    ask = -1 if high == spec.RLIM_INFINITY else high
    cfg = spec.config_for(tmp_path, spec.Process(["true"], rlimits=[("nproc", ask, ask)]), [],
                          network="host", hostname="h", extra_files={}, rootless=True)
    assert {"type": "RLIMIT_NPROC", "soft": spec.PIDS_LIMIT, "hard": spec.PIDS_LIMIT} in cfg["process"]["rlimits"]
    cfg = spec.config_for(tmp_path, spec.Process(["true"], rlimits=[("nproc", 5, 7)]), [],
                          network="host", hostname="h", extra_files={}, rootless=True)
    assert {"type": "RLIMIT_NPROC", "soft": 5, "hard": 7} in cfg["process"]["rlimits"]


def test_hosts_file_refuses_what_would_add_a_line_or_a_name():
    """The IR reader refused these already; the runtime's writer refuses them again at the point of use."""
    from backend.runtime.spec import hosts_file

    assert hosts_file("h", [("db", "10.0.0.7")]).endswith("127.0.1.1\th\n10.0.0.7\tdb\n")
    for host, ip in (("a\n6.6.6.6", "1.2.3.4"), ("a b", "1.2.3.4"), ("db", "1.2.3.4 evil"), ("db", "1.2.3.4#"), ("", "1.1.1.1")):
        with pytest.raises(ValueError):
            hosts_file("h", [(host, ip)])


@pytest.mark.parametrize("field, value, says", [
    ("extra_hosts", ("HostIP", "a\n6.6.6.6\tbank.example", "10.0.0.1"), ".exec.extra_hosts[0].host: host name"),
    ("extra_hosts", ("HostIP", "db", "10.0.0.1 evil"), ".exec.extra_hosts[0].ip: '10.0.0.1 evil' is not an IPv4"),
    ("shm_size", 1 << 40, ".exec.shm_size: shm size 1099511627776 out of range"),
    ("ulimits", ("Ulimit", "nofile", 10, 5), ".exec.ulimits[0].soft: soft limit 10 above the hard limit 5"),
])
def test_a_hostile_graph_is_refused_before_anything_runs(tmp_path, field, value, says):
    """What a graph from someone else could put in a step's /etc/hosts, /dev/shm or rlimits: `irctl solve`
    refuses it with the key path, as every IR reader does (spec/conformance has the same cases)."""
    from ir import builder, ops
    from ir.codec import dump_document
    from tests.support.cli import irctl

    made = (getattr(ops, value[0])(*value[1:]),) if isinstance(value, tuple) else value
    st = builder.scratch().run(["/bin/true"])
    body = ops.replace(st.vertex.op.exec, **{field: made})
    doc = builder.build_document({"default": st._next(builder.vertex("exec", body, [(builder.scratch().vertex, 0)]))})
    path = tmp_path / "hostile.ir"
    path.write_bytes(dump_document(doc))
    r = irctl("solve", path, env={"IRCTL_CACHE_DIR": str(tmp_path / "cache")})
    assert r.code == 2 and says in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
