"""The store and a local export give no other local user anything.

A hostile build leaves what it can in the cache store (a setuid-root copy of a shell, device nodes
from `RUN mknod` and from an ADDed tar, a cache mount's files) and in a `type=local` export. Another
local user (`nobody`, through `runuser`) must reach nothing in the store — root and rootless, an old
store created 0755 included — and the export must hold no device node and no setuid/setgid file."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support.cli import irctl
from tests.rootless.conftest import user_cli  # noqa: F401  (session fixture)
from tests.security.conftest import entry, tar_bytes, write_ctx

pytestmark = pytest.mark.e2e

OTHER = "nobody"

HOSTILE = """FROM busybox
ADD devs.tar /
RUN --mount=type=cache,target=/c echo cached > /c/f && cp /bin/busybox /suid && chmod 4755 /suid \\
    && cp /bin/busybox /sgid && chmod 2755 /sgid && {mknod}
"""
MKNOD = "mknod /chr c 1 1 && mknod /blk b 7 0 && chmod 666 /chr /blk"

_PROBE = r"""
import json, os, sys
reached = []
for p in json.load(open(sys.argv[1])):
    try:
        os.lstat(p)
    except OSError:
        continue
    reached.append(p)
try:
    os.listdir(sys.argv[2])
    reached.append("listdir " + sys.argv[2])
except OSError:
    pass
print(json.dumps(reached))
"""


def _devs_tar() -> bytes:
    return tar_bytes([entry("dev/", "dir"), entry("dev/mem", "chr", devmajor=1, devminor=1, mode=0o666),
                      entry("dev/disk", "blk", devmajor=7, devminor=0, mode=0o666)])


@pytest.fixture
def shared_dir():
    """A dir every user can traverse (pytest's tmp dirs are 0700: they would hide the store anyway)."""
    d = Path(tempfile.mkdtemp(prefix="irctl-perms.", dir="/tmp"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _all_paths(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        out += [os.path.join(dirpath, n) for n in dirnames + filenames]
    return out


def _reachable_by_other(root: Path, work: Path) -> list[str]:
    """Every path below `root` that user OTHER can lstat (and `root` if it can list it)."""
    paths = work / "paths.json"
    paths.write_text(json.dumps(_all_paths(root)))
    os.chmod(paths, 0o644)
    probe = work / "probe.py"
    probe.write_text(_PROBE)
    os.chmod(probe, 0o644)
    python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or "python3"  # not root's pyenv
    res = subprocess.run(["runuser", "-u", OTHER, "--", python, "-I", str(probe), str(paths), str(root)],
                         capture_output=True, text=True, cwd="/")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _devices(root: Path) -> list[str]:
    found = []
    for p in _all_paths(root):
        st = os.lstat(p)
        if stat.S_ISBLK(st.st_mode) or (stat.S_ISCHR(st.st_mode) and st.st_rdev != 0):
            found.append(p)
    return found


def _setid(root: Path) -> list[str]:
    return [p for p in _all_paths(root)
            if not os.path.islink(p) and os.lstat(p).st_mode & (stat.S_ISUID | stat.S_ISGID)
            and not os.path.isdir(p)]


def _real_root() -> None:
    from backend.userns import in_user_namespace

    if in_user_namespace():
        pytest.skip("RUN mknod needs real root (rootless: test_rootless_store_gives_other_users_nothing)")


def _other_exists() -> None:
    _real_root()
    if subprocess.run(["id", OTHER], capture_output=True).returncode != 0:
        pytest.skip(f"no user {OTHER!r}")


def test_store_and_local_export_give_other_users_nothing(shared_dir, layout_ctx):
    _other_exists()
    ctx = write_ctx(shared_dir / "ctx", {"Dockerfile": HOSTILE.format(mknod=MKNOD), "devs.tar": _devs_tar()})
    cache, out = shared_dir / "cache", shared_dir / "out"
    r = irctl("build", ctx, "--progress", "plain", *layout_ctx, "--output", f"type=local,dest={out}",
              env={"IRCTL_CACHE_DIR": str(cache), "XDG_RUNTIME_DIR": str(shared_dir)})
    assert r.code == 0, r.stderr
    # the store: 0700 at the top and for every directory of its own layout
    for d in (cache, *(cache / n for n in ("layers", "mounts", "tmp", "locks", "blobs", "blobs/sha256"))):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    assert _reachable_by_other(cache, shared_dir) == []
    assert _devices(cache) == [], "a device node was created in the store"
    assert list((cache / "layers").glob("*/suid")), "the setuid file is in a layer (the store is private)"
    # the local export: no device node, no setuid/setgid file, one warning line each
    assert _devices(out) == []
    assert _setid(out) == []
    assert (out / "suid").is_file() and stat.S_IMODE((out / "suid").stat().st_mode) == 0o755
    assert not any(os.path.lexists(out / p) for p in ("chr", "blk", "dev/mem", "dev/disk"))
    assert "type=local: 4 device node(s) not created" in r.stderr, r.stderr
    assert "type=local: setuid/setgid bits cleared on 2 file(s) (/sgid, /suid)" in r.stderr, r.stderr
    # no runtime dir left under $XDG_RUNTIME_DIR, and none was ever other users' (mkdtemp: 0700)
    assert not list(shared_dir.glob("irctl-*"))


def test_image_exports_keep_devices_and_setuid(shared_dir, layout_ctx):
    """Faithful images: a rootfs tar and a layer tar still carry the nodes (as tar entries, never as
    nodes on disk) and the setuid bits."""
    _real_root()
    import tarfile

    ctx = write_ctx(shared_dir / "ctx", {"Dockerfile": HOSTILE.format(mknod=MKNOD), "devs.tar": _devs_tar()})
    cache, out = shared_dir / "cache", shared_dir / "rootfs.tar"
    r = irctl("build", ctx, "--progress", "plain", *layout_ctx, "--output", f"type=tar,dest={out}",
              env={"IRCTL_CACHE_DIR": str(cache)})
    assert r.code == 0, r.stderr
    with tarfile.open(out) as tf:
        members = {m.name.lstrip("./"): m for m in tf.getmembers()}
    for name, kind, dev in (("chr", tarfile.CHRTYPE, (1, 1)), ("blk", tarfile.BLKTYPE, (7, 0)),
                            ("dev/mem", tarfile.CHRTYPE, (1, 1)), ("dev/disk", tarfile.BLKTYPE, (7, 0))):
        m = members[name]
        assert (m.type, (m.devmajor, m.devminor)) == (kind, dev), name
    assert members["chr"].mode & 0o777 == 0o666
    assert members["suid"].mode & 0o7777 == 0o4755 and members["sgid"].mode & 0o7777 == 0o2755
    assert _devices(cache) == []


def test_an_old_store_made_0755_is_made_private(shared_dir, layout_ctx):
    _other_exists()
    ctx = write_ctx(shared_dir / "ctx", {"Dockerfile": "FROM busybox\nRUN echo x > /f\n"})
    cache = shared_dir / "cache"
    env = {"IRCTL_CACHE_DIR": str(cache)}
    assert irctl("build", ctx, "--progress", "plain", *layout_ctx, env=env).code == 0
    for d in [cache, *(p for p in cache.iterdir() if p.is_dir()), cache / "blobs" / "sha256"]:
        os.chmod(d, 0o755)  # what an older irctl left
    assert _reachable_by_other(cache, shared_dir) != []
    r = irctl("build", ctx, "--progress", "plain", *layout_ctx, env=env)
    assert r.code == 0, r.stderr
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert _reachable_by_other(cache, shared_dir) == []


def test_rootless_store_gives_other_users_nothing(user_cli, busybox_layout, tmp_path):  # noqa: F811
    _other_exists()
    work = user_cli.root / f"perm-{os.getpid()}"
    ctx = write_ctx(work / "ctx", {"Dockerfile": HOSTILE.format(mknod="true"), "devs.tar": _devs_tar()})
    layout = work / "busybox"
    shutil.copytree(busybox_layout, layout)
    user_cli.chown(work)
    out = work / "out"
    r = user_cli.run("build", "--progress", "plain", "--build-context", f"busybox=oci-layout://{layout}:latest",
                     "--output", f"type=local,dest={out}", str(ctx))
    assert r.returncode == 0, r.stderr
    cache = user_cli.home / ".cache" / "irctl"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert _reachable_by_other(cache, user_cli.root) == []
    assert _devices(cache) == [] and _devices(out) == []
    assert _setid(out) == []
    assert "type=local: 2 device node(s) not created" in r.stderr, r.stderr


def test_pulled_layer_devices_stay_placeholders(tmp_path):
    """A base image's device nodes: placeholders in the store, skipped by type=local, real entries in
    the layers of an OCI export (the pulled blob is reused as it was)."""
    import tarfile

    from tests.security.conftest import make_layout

    layout = make_layout(tmp_path / "layout", [_devs_tar()])
    ctx = write_ctx(tmp_path / "ctx", {"Dockerfile": "FROM img\nRUN test -f /dev/mem || ls -l /dev\n"})
    cache = tmp_path / "cache"
    env = {"IRCTL_CACHE_DIR": str(cache)}
    base = ["build", ctx, "--progress", "plain", "--build-context", f"img=oci-layout://{layout}:latest"]
    r = irctl(*base, "--output", f"type=local,dest={tmp_path / 'out'}", env=env)
    assert r.code == 0, r.stderr
    assert _devices(cache) == [] and _devices(tmp_path / "out") == []
    assert "type=local: 2 device node(s) not created (/dev/disk, /dev/mem)" in r.stderr, r.stderr
    r = irctl(*base, "--output", f"type=oci,tar=false,dest={tmp_path / 'oci'}", env=env)
    assert r.code == 0, r.stderr
    kinds = set()
    for blob in (tmp_path / "oci" / "blobs" / "sha256").iterdir():
        try:
            with tarfile.open(blob) as tf:
                kinds |= {(m.name, m.type) for m in tf if m.isdev()}
        except tarfile.TarError:
            continue
    assert kinds == {("dev/mem", tarfile.CHRTYPE), ("dev/disk", tarfile.BLKTYPE)}, kinds


def test_file_capabilities_are_left_out_of_a_local_export(shared_dir, layout_ctx):
    """security.capability (e.g. cap_setuid+ep) is privilege like setuid for whoever runs the file:
    a type=local export leaves it out (with a warning), a rootfs tar keeps it."""
    import struct
    import tarfile

    caps = struct.pack("<IIIII", 0x02000001, 1 << 1, 0, 0, 0)  # VFS_CAP_REVISION_2 | effective, CAP_DAC_OVERRIDE
    info = tarfile.TarInfo("capsh")
    info.mode, info.size = 0o755, 4
    info.pax_headers = {"SCHILY.xattr.security.capability": caps.decode("latin-1")}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, encoding="latin-1") as tf:
        tf.addfile(info, io.BytesIO(b"#!/x"))
    ctx = write_ctx(shared_dir / "ctx", {"Dockerfile": "FROM busybox\nADD caps.tar /\n", "caps.tar": buf.getvalue()})
    env = {"IRCTL_CACHE_DIR": str(shared_dir / "cache")}
    out = shared_dir / "out"
    r = irctl("build", ctx, "--progress", "plain", *layout_ctx, "--output", f"type=local,dest={out}", env=env)
    assert r.code == 0, r.stderr
    assert (out / "capsh").is_file()
    assert "security.capability" not in os.listxattr(out / "capsh")
    assert "type=local: file capabilities left out on 1 file(s) (/capsh)" in r.stderr, r.stderr
    r = irctl("build", ctx, "--progress", "plain", *layout_ctx, "--output", f"type=tar,dest={shared_dir / 'r.tar'}",
              env=env)
    assert r.code == 0, r.stderr
    with tarfile.open(shared_dir / "r.tar", encoding="latin-1") as tf:
        m = tf.getmember("capsh")
    assert m.pax_headers.get("SCHILY.xattr.security.capability", "").encode("latin-1") == caps
