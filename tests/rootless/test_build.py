"""One multi-stage build, end to end through the CLI, as root and as an unprivileged user (rootless).

The base image has a second layer with a whiteout, an opaque dir and a device node, so extraction in the
user namespace is exercised too. Both modes must give the same image: in-namespace owners in the tars
(uid 0 for what root made, 1000 for what `USER 1000` made), whiteouts and opaque dirs as OCI `.wh.`
entries, an OCI layout that skopeo and umoci accept, and a second build that is all cache hits.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from tests.rootless.conftest import UserCLI
from tests.support.baseimage import make_busybox_layout

pytestmark = pytest.mark.e2e

TOKEN = "s3cr3t-rootless-token-7f3a"

DOCKERFILE = """\
FROM base AS build
COPY greet.txt /src/greet.txt
RUN --mount=type=cache,target=/cache \\
    cat /src/greet.txt > /built.txt && echo run >> /cache/runs.log
RUN --mount=type=secret,id=token,required=true \\
    test -s /run/secrets/token && wc -c < /run/secrets/token > /secret-len

FROM base
COPY --from=build /built.txt /secret-len /app/
COPY greet.txt /app/greet.txt
RUN test ! -e /bin/vi && test "$(ls /usr/sbin)" = only && echo root-made > /etc/motd \\
    && echo app:x:1000:1000::/home/app:/bin/sh >> /etc/passwd && echo app:x:1000: >> /etc/group \\
    && mkdir -p /home/app /gone && chown 1000:1000 /home/app && echo x > /gone/f && rm /usr/bin/less
RUN rm -rf /gone && mkdir /gone && echo y > /gone/g
USER 1000
RUN echo mine > /home/app/mine.txt && id -u > /home/app/uid && id -g >> /home/app/uid
"""


def _extra_layer() -> bytes:
    """bin/vi deleted, usr/sbin opaque with one file, a device node dev/mydev (1:3)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name, kind=tarfile.REGTYPE, data=b"", mode=0o644, **kw):
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.size, ti.mtime = kind, mode, len(data), 0
            for k, v in kw.items():
                setattr(ti, k, v)
            tar.addfile(ti, io.BytesIO(data) if data else None)
        add("bin/", tarfile.DIRTYPE, mode=0o755)
        add("bin/.wh.vi")
        add("dev/", tarfile.DIRTYPE, mode=0o755)
        add("dev/mydev", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3)
        add("usr/", tarfile.DIRTYPE, mode=0o755)
        add("usr/sbin/", tarfile.DIRTYPE, mode=0o755)
        add("usr/sbin/.wh..wh..opq")
        add("usr/sbin/only", data=b"only\n", mode=0o755)
    return buf.getvalue()


def make_base(dest: Path) -> Path:
    """busybox plus `_extra_layer`, as an OCI layout (ref latest)."""
    layout = make_busybox_layout(dest)
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    mdesc = index["manifests"][0]
    manifest = json.loads((blobs / mdesc["digest"].split(":")[1]).read_text())
    config = json.loads((blobs / manifest["config"]["digest"].split(":")[1]).read_text())
    tar_bytes = _extra_layer()
    gz = gzip.compress(tar_bytes, mtime=0)

    def put(data: bytes) -> dict:
        h = hashlib.sha256(data).hexdigest()
        (blobs / h).write_bytes(data)
        return {"digest": f"sha256:{h}", "size": len(data)}

    config["rootfs"]["diff_ids"].append("sha256:" + hashlib.sha256(tar_bytes).hexdigest())
    manifest["layers"].append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **put(gz)})
    manifest["config"].update(put(json.dumps(config).encode()))
    mdesc.update(put(json.dumps(manifest).encode()))
    (layout / "index.json").write_text(json.dumps(index))
    return layout


class RootCLI:
    """The same CLI as root, with its own HOME (so its cache is ~/.cache/irctl too)."""

    def __init__(self, root: Path):
        self.root = root
        self.home = root / "home"
        self.home.mkdir()

    def chown(self, path: Path) -> None:
        pass

    def can_use_fuse(self) -> bool:
        return shutil.which("fuse-overlayfs") is not None and os.path.exists("/dev/fuse")

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300):
        from tests.rootless.conftest import Result

        env = {**os.environ, "HOME": str(self.home), **(env or {})}
        for k in ("IRCTL_CACHE_DIR", "XDG_CACHE_HOME"):
            env.pop(k, None)
        t0 = time.monotonic()
        res = subprocess.run([sys.executable, "-m", "irctl", *args], capture_output=True, text=True,
                             cwd=self.root, env=env, timeout=timeout)
        return Result(res.returncode, res.stdout, res.stderr, time.monotonic() - t0)


@pytest.fixture(params=["root", "rootless"])
def cli(request):
    if request.param == "rootless":
        user_cli: UserCLI = request.getfixturevalue("user_cli")
        work = Path(tempfile.mkdtemp(prefix="case.", dir=user_cli.root))
        yield request.param, user_cli, work
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(user_cli.home / ".cache", ignore_errors=True)
        return
    root = Path(tempfile.mkdtemp(prefix="irctl-root-case.", dir="/tmp"))
    yield request.param, RootCLI(root), root
    shutil.rmtree(root, ignore_errors=True)


def _layer_members(layout: Path) -> list[dict[str, tarfile.TarInfo]]:
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":")[1]).read_text())
    out = []
    for layer in manifest["layers"]:
        with tarfile.open(blobs / layer["digest"].split(":")[1], mode="r:*") as tar:
            out.append({m.name.rstrip("/"): m for m in tar.getmembers()})
    return out


def _steps_not_cached(stderr: str) -> list[str]:
    """Plain-progress build steps (`#N [i/n] ...`) that did not report CACHED."""
    steps = dict(re.findall(r"^#(\d+) (\[.*)$", stderr, re.M))
    cached = set(re.findall(r"^#(\d+) CACHED$", stderr, re.M))
    return [text for n, text in steps.items() if n not in cached]


@pytest.mark.parametrize("snapshotter", ["auto", "fuse-overlayfs", "copy"])
def test_multistage_build(cli, snapshotter):
    """`auto` must pick kernel overlayfs on this kernel, as root and rootless; the fallbacks, forced through
    $IRCTL_SNAPSHOTTER, must build the same image."""
    mode, runner, work = cli
    env = {} if snapshotter == "auto" else {"IRCTL_SNAPSHOTTER": snapshotter}
    if snapshotter == "fuse-overlayfs" and not runner.can_use_fuse():
        pytest.skip(f"{mode}: fuse-overlayfs missing or /dev/fuse not usable by the build user")
    ctx = work / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "greet.txt").write_text("hello rootless\n")
    (work / "token").write_text(TOKEN)
    base = make_base(work / "base")
    runner.chown(work)
    out = work / "image"
    args = ["build", "--progress", "plain", "--debug", "--build-context", f"base=oci-layout://{base}",
            "--secret", f"id=token,src={work / 'token'}", "--output", f"type=oci,tar=false,dest={out}",
            "-t", "rootless:latest", str(ctx)]

    first = runner.run(*args, env=env)
    assert first.returncode == 0, first.stderr
    expected = "overlay" if snapshotter == "auto" else snapshotter
    assert re.search(rf"^=> snapshotter: {expected}( \(.*\))?$", first.stderr, re.M), first.stderr
    if mode == "rootless":
        assert "rootless: user namespace as uid 0" in first.stderr
        assert "skipped" not in first.stderr  # a device node is a placeholder in the store (backend.fs.devnodes)
    assert (runner.home / ".cache" / "irctl" / "index.db").is_file()

    second = runner.run(*args, env=env)
    assert second.returncode == 0, second.stderr
    assert _steps_not_cached(second.stderr) == [], second.stderr
    print(f"\n{mode}, {expected}: first build {first.seconds:.2f}s, all-cached rebuild {second.seconds:.2f}s")

    # the OCI layout: skopeo and umoci accept it
    subprocess.run(["skopeo", "inspect", f"oci:{out}:latest"], check=True, capture_output=True)
    layers = _layer_members(out)
    everything = {name: m for members in layers for name, m in members.items()}
    assert (everything["etc/passwd"].uid, everything["etc/passwd"].gid) == (0, 0)
    assert (everything["etc/motd"].uid, everything["etc/motd"].gid) == (0, 0)
    assert (everything["app/built.txt"].uid, everything["app/built.txt"].gid) == (0, 0)
    assert (everything["home/app"].uid, everything["home/app"].gid) == (1000, 1000)
    assert (everything["home/app/mine.txt"].uid, everything["home/app/mine.txt"].gid) == (1000, 1000)
    assert "usr/bin/.wh.less" in everything
    assert (everything["dev/mydev"].type, everything["dev/mydev"].devmajor) == (tarfile.CHRTYPE, 1)
    assert "gone/.wh..wh..opq" in everything
    for members in layers:
        for m in members.values():
            assert not any("overlay." in k for k in m.pax_headers), (m.name, m.pax_headers)
    blob_bytes = b"".join(p.read_bytes() for p in (out / "blobs" / "sha256").iterdir())
    assert TOKEN.encode() not in blob_bytes

    bundle = work / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{out}:latest", str(bundle)], check=True,
                   capture_output=True)
    rootfs = bundle / "rootfs"
    st = os.lstat(rootfs / "etc/passwd")
    assert (st.st_uid, st.st_gid) == (0, 0)
    st = os.lstat(rootfs / "home/app/mine.txt")
    assert (st.st_uid, st.st_gid) == (1000, 1000)
    assert (rootfs / "home/app/uid").read_text() == "1000\n1000\n"
    assert (rootfs / "app/built.txt").read_text() == "hello rootless\n"
    assert (rootfs / "app/secret-len").read_text().strip() == str(len(TOKEN))
    assert sorted(os.listdir(rootfs / "gone")) == ["g"]
    assert not os.path.lexists(rootfs / "bin/vi") and not os.path.lexists(rootfs / "usr/bin/less")
    assert os.listdir(rootfs / "usr/sbin") == ["only"]

    if snapshotter == "auto":  # the store holds files of subordinate ids: pruning works rootless too
        pruned = runner.run("cache", "prune", "--all")
        assert pruned.returncode == 0, pruned.stderr
        assert pruned.stdout.startswith("freed "), pruned.stdout
        layers_dir = runner.home / ".cache" / "irctl" / "layers"
        assert not layers_dir.exists() or not any(layers_dir.iterdir())


def _device_tar(count: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(count):
            ti = tarfile.TarInfo(f"devs/node{i}")
            ti.type, ti.devmajor, ti.devminor, ti.mode = tarfile.CHRTYPE, 1, 3, 0o666
            tar.addfile(ti)
    return buf.getvalue()


def test_device_nodes_are_not_a_warning_each(cli):
    """Rootless, an image's device nodes (a base layer's, an ADDed tar's) are kept as placeholders:
    no line per node (a count, once, where a `type=local` export leaves them out)."""
    mode, runner, work = cli
    ctx = work / "ctx"
    ctx.mkdir()
    (ctx / "devs.tar").write_bytes(_device_tar(12))
    (ctx / "Dockerfile").write_text("FROM base\nADD devs.tar /\nRUN ls /devs | grep -c node\n")
    base = make_base(work / "base")
    runner.chown(work)
    r = runner.run("build", "--progress", "plain", "--build-context", f"base=oci-layout://{base}",
                   "--output", f"type=local,dest={work / 'rootfs'}",
                   "--output", f"type=oci,tar=false,dest={work / 'image'}", "-t", "devs:1", str(ctx))
    assert r.returncode == 0, r.stderr
    assert re.search(r"^#\d+ \d+\.\d{3} 12$", r.stderr, re.M), r.stderr
    device_lines = [line for line in r.stderr.splitlines() if "device" in line or "node" in line and "#" not in line]
    assert len(device_lines) <= 1, r.stderr
    assert "skipped" not in r.stderr, r.stderr
    members = {name: m for layer in _layer_members(work / "image") for name, m in layer.items()}
    assert all(members[f"devs/node{i}"].ischr() for i in range(12))
