"""The rootless pieces one by one: subordinate id ranges, the maps handed to newuidmap, the rootless OCI
config and runtime flags, and the CLI's refusal (with what to fix) when the user has no subordinate ids."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from backend.runtime import finder, spec
from backend import userns
from tests.rootless.conftest import rootless_skip_reason


def test_subordinate_ranges_by_name_or_uid(tmp_path: Path):
    f = tmp_path / "subuid"
    f.write_text("alice:100000:65536\nbob:200000:1000\n# comment\n1234:300000:10\nalice:500000:5\nbad:line\n"
                 "alice:x:1\ncarol:600000:0\n")
    assert userns.subordinate_ranges(f, "alice", 999) == [userns.IdRange(100000, 65536), userns.IdRange(500000, 5)]
    assert userns.subordinate_ranges(f, "dave", 1234) == [userns.IdRange(300000, 10)]
    assert userns.subordinate_ranges(f, "carol", 7) == []
    assert userns.subordinate_ranges(tmp_path / "missing", "alice", 1) == []


def test_map_args_root_is_the_user_then_the_ranges():
    assert userns._map_args(1001, [userns.IdRange(100000, 65536), userns.IdRange(500000, 5)]) == [
        "0", "1001", "1", "1", "100000", "65536", "65537", "500000", "5"]


def test_problems_name_what_to_install_and_configure(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(userns.shutil, "which", lambda tool: None)
    out = userns.problems("nosuchuser-irctl", 4242, 4242)
    assert "newuidmap not found (install the uidmap package)" in out
    assert any("no subordinate uids for nosuchuser-irctl in /etc/subuid" in p for p in out)
    assert any("no subordinate gids for nosuchuser-irctl in /etc/subgid" in p for p in out)


def test_rootless_config_has_a_user_namespace_with_our_mappings_and_no_cgroups(tmp_path: Path, monkeypatch):
    rows = {"uid": [(0, 1001, 1), (1, 100000, 65536)], "gid": [(0, 1001, 1), (1, 100000, 65536)]}
    monkeypatch.setattr(spec, "read_id_map", lambda kind: rows[kind])
    cfg = spec.config_for(tmp_path, spec.Process(["true"]), [], network="host", hostname="h", extra_files={},
                        rootless=True)
    linux = cfg["linux"]
    assert {"type": "user"} in linux["namespaces"]
    assert "resources" not in linux
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": 0, "size": 1},
                                    {"containerID": 1, "hostID": 1, "size": 65536}]
    assert linux["gidMappings"] == linux["uidMappings"]
    sys_mount = next(m for m in cfg["mounts"] if m["destination"] == "/sys")
    assert sys_mount["type"] == "bind" and sys_mount["source"] == "/sys" and "ro" in sys_mount["options"]

    rooted = spec.config_for(tmp_path, spec.Process(["true"]), [], network="host", hostname="h", extra_files={},
                           rootless=False)
    assert {"type": "user"} not in rooted["linux"]["namespaces"] and "uidMappings" not in rooted["linux"]
    assert next(m for m in rooted["mounts"] if m["destination"] == "/sys")["type"] == "sysfs"


def test_runc_gets_rootless_flag_only_in_a_user_namespace(monkeypatch):
    monkeypatch.setattr(finder, "in_user_namespace", lambda: True)
    assert finder._rootless_args("/usr/sbin/runc") == ("--rootless", "true")
    assert finder._rootless_args("/usr/bin/crun") == ()
    monkeypatch.setattr(finder, "in_user_namespace", lambda: False)
    assert finder._rootless_args("/usr/sbin/runc") == ()


def test_this_process_namespace_is_detected():
    expected = open("/proc/self/uid_map").read().split() != ["0", "0", "4294967295"]
    assert userns.in_user_namespace() is expected


@pytest.mark.e2e
def test_a_user_without_subordinate_ids_is_told_what_to_do(user_cli, tmp_path: Path):
    """`nobody` has no /etc/subuid entry: the build stops before doing anything, naming the fix."""
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    if userns.subordinate_ranges("/etc/subuid", "nobody", pwd.getpwnam("nobody").pw_uid):
        pytest.skip("nobody has subordinate ids here")
    import subprocess

    ctx = user_cli.root / "ctx-nobody"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    os.chmod(ctx, 0o755)
    env = [e.replace(f"HOME={user_cli.home}", "HOME=/nonexistent") for e in user_cli.env()]
    res = subprocess.run(["runuser", "-u", "nobody", "--", *env, user_cli.python, "-m", "irctl", "build",
                          str(ctx)], capture_output=True, text=True, cwd="/")
    assert res.returncode == 1, res.stderr
    assert "error: rootless build impossible: no subordinate uids for nobody in /etc/subuid" in res.stderr
    assert "usermod --add-subuids" in res.stderr


def test_skip_reason_is_specific():
    reason = rootless_skip_reason()
    assert reason is None or reason.startswith(("rootless:", "e2e:"))


_LAYER_SCRIPT = """
import os, sys
from pathlib import Path
{enter}
from backend.fs.layerformat import opaque_xattr
from backend.snapshot.layertree import layer_tree_digest
d = Path(sys.argv[1])
(d / "etc").mkdir(parents=True)
(d / "etc" / "f").write_text("x")
os.mknod(d / "gone", 0o020000, 0)
(d / "opq").mkdir()
os.setxattr(d / "opq", opaque_xattr(), b"y")
for p in (d / "etc" / "f", d / "etc", d / "gone", d / "opq"):
    os.chown(p, 0, 0)
    if not str(p).endswith("gone"):
        os.chmod(p, 0o755)
print(opaque_xattr(), layer_tree_digest(d))
"""


@pytest.mark.e2e
def test_layer_identity_is_the_same_root_and_rootless(user_cli, tmp_path: Path):
    """Opaque dirs are spelt trusted.overlay.opaque as root and user.overlay.opaque rootless; owners are the
    namespace's: the same layer has the same identity either way, so cache keys agree."""
    import subprocess
    import sys

    script = user_cli.root / "layer_identity.py"
    script.write_text(_LAYER_SCRIPT.format(enter="from backend import userns\nif os.geteuid():\n    userns.enter()"))
    os.chmod(script, 0o644)
    as_root = subprocess.run([sys.executable, str(script), str(tmp_path / "layer")], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(user_cli.src)}, check=True).stdout.split()
    work = user_cli.root / "layer-identity"
    work.mkdir()
    user_cli.chown(work)
    rootless = subprocess.run(["runuser", "-u", user_cli.pw.pw_name, "--", *user_cli.env(), user_cli.python,
                               str(script), str(work / "layer")], capture_output=True, text=True, check=True,
                              cwd="/").stdout.split()
    assert as_root[0] == "trusted.overlay.opaque" and rootless[0] == "user.overlay.opaque"
    assert as_root[1] == rootless[1]


_EARLY_IMPORT_SCRIPT = """
from backend.fs.devnodes import device_xattr
from backend.fs.layerformat import opaque_xattr
from backend.snapshot.overlay import OverlaySnapshotter
print(opaque_xattr(), device_xattr(), "userxattr" in OverlaySnapshotter.options())
from backend import userns
userns.enter()
print(opaque_xattr(), device_xattr(), "userxattr" in OverlaySnapshotter.options())
"""


@pytest.mark.e2e
def test_xattr_names_imported_before_entering_the_namespace_follow_it(user_cli, tmp_path: Path):
    """The layer format's xattr names are asked when used, not fixed when first imported: a module
    imported before `userns.enter` (as the CLI's own imports are) still spells them `user.*` after."""
    import subprocess

    script = user_cli.root / "early_import.py"
    script.write_text(_EARLY_IMPORT_SCRIPT)
    os.chmod(script, 0o644)
    out = subprocess.run(["runuser", "-u", user_cli.pw.pw_name, "--", *user_cli.env(), user_cli.python, str(script)],
                         capture_output=True, text=True, check=True, cwd="/").stdout.splitlines()
    assert out == ["trusted.overlay.opaque trusted.irctl.device False",
                   "user.overlay.opaque user.irctl.device True"]
