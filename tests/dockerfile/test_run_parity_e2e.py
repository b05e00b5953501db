"""BuildKit's run and copy semantics, end to end through ``irctl build`` on runc/overlayfs.

The expected trees and outputs were taken from the local BuildKit (dockerd 20.10, BuildKit v0.8)
on the same Dockerfiles, and checked against current BuildKit's code where the two differ (each
test says where).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.cli import irctl

pytestmark = pytest.mark.e2e


def build(tmp_path: Path, base: Path, files: dict[str, str], *extra: str) -> tuple[Path, str]:
    """Build ``files`` (the Dockerfile among them) on the busybox layout; returns the exported root
    filesystem of the last stage and the build's stderr."""
    ctx = tmp_path / "ctx"
    for name, text in files.items():
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text(text)
    out = tmp_path / "out"
    r = irctl("build", ctx, "--progress", "plain", "--cache-dir", tmp_path / "cache",
              "--build-context", f"base=oci-layout://{base}:latest", *extra, "--output", f"type=local,dest={out}")
    assert r.code == 0, r.stderr
    return out, r.stderr


def test_mounts_without_target_land_on_the_working_directory(tmp_path, busybox_layout):
    dockerfile = """\
FROM base
WORKDIR /app
RUN --mount=type=bind,source=sub ls > /bind-source.txt
RUN --mount=type=bind ls > /bind-context.txt
RUN --mount=type=bind,from=base,source=/etc ls passwd > /bind-from.txt
RUN --mount=type=tmpfs sh -c 'touch t && grep " /app " /proc/mounts | cut -d" " -f3 > /tmpfs.txt'
RUN --mount=type=cache sh -c 'echo c >> runs && cat runs > /cache.txt'
RUN ls -A /app > /after.txt
"""
    out, _ = build(tmp_path, busybox_layout, {"Dockerfile": dockerfile, "a.txt": "A\n", "sub/s.txt": "S\n"})
    assert (out / "bind-source.txt").read_text() == "s.txt\n"
    assert (out / "bind-context.txt").read_text() == "Dockerfile\na.txt\nsub\n"
    assert (out / "bind-from.txt").read_text() == "passwd\n"
    assert (out / "tmpfs.txt").read_text() == "tmpfs\n"
    assert (out / "cache.txt").read_text() == "c\n"
    assert (out / "after.txt").read_text() == ""  # nothing the mounts held stays in /app


def test_copy_pattern_onto_a_file_destination_builds_and_warns(tmp_path, busybox_layout):
    """BuildKit (v0.8 and current ``docopy``) copies each match onto the destination in turn:
    ``/dest`` is the last file; a directory match before a file makes ``/dest`` a directory."""
    dockerfile = "FROM base\nCOPY *.txt /dest\nCOPY [cd]* /mixed\n"
    out, stderr = build(tmp_path, busybox_layout, {"Dockerfile": dockerfile, "a.txt": "A\n", "b.txt": "B\n",
                                                   "c/y": "Y\n", "d.txt": "D\n"})
    assert (out / "dest").read_text() == "D\n"
    assert sorted(p.name for p in (out / "mixed").iterdir()) == ["d.txt", "y"]
    warnings = [line for line in stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 2, stderr
    assert "COPY *.txt /dest" in warnings[0] and "matches 3 paths (a.txt, b.txt, d.txt)" in warnings[0]
    assert "ends up as d.txt" in warnings[0] and "end the destination with /" in warnings[0]


def _ssh_add_tools(dest: Path) -> None:
    """The host's ssh-add with the libraries and loader it links (busybox has no agent client)."""
    dest.mkdir(parents=True)
    ldd = subprocess.run(["ldd", shutil.which("ssh-add")], capture_output=True, text=True, check=True).stdout
    libs = [p for p in re.findall(r"(/\S+\.so[.\d]*)", ldd)]
    for path in [shutil.which("ssh-add"), *libs]:
        shutil.copy(path, dest / Path(path).name)
    loader = next(Path(p).name for p in libs if "ld-linux" in p)
    (dest / "run").write_text(f'#!/bin/sh\nexec /tools/{loader} --library-path /tools /tools/ssh-add "$@"\n')
    (dest / "run").chmod(0o755)


@pytest.fixture
def agent(tmp_path: Path):
    """A real ssh-agent holding one generated key; yields (socket, the key's fingerprint)."""
    if shutil.which("ssh-agent") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("openssh-client missing")
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if sock.exists():
                break
            time.sleep(0.02)
        key = tmp_path / "key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "irctl-parity", "-f", key], check=True)
        subprocess.run(["ssh-add", "-q", key], check=True, env={**os.environ, "SSH_AUTH_SOCK": str(sock)},
                       capture_output=True)
        fp = subprocess.run(["ssh-keygen", "-lf", key], capture_output=True, text=True, check=True).stdout.split()[1]
        yield sock, fp
    finally:
        proc.terminate()
        proc.wait()


def test_ssh_mount_sets_ssh_auth_sock(tmp_path, busybox_layout, agent):
    """BuildKit's client sets SSH_AUTH_SOCK to the first ssh mount's target unless the environment
    has it (``ExecOp.Marshal``); ``ssh-add -l`` in the step then lists the agent's key.  The host
    socket's path is in neither the graph nor the cache key: another agent path is all cache hits."""
    sock, fingerprint = agent
    dockerfile = """\
FROM base AS main
RUN --mount=type=bind,source=tools,target=/tools --mount=type=ssh /tools/run -l > /keys.txt
RUN --mount=type=ssh echo "$SSH_AUTH_SOCK" > /default.txt
RUN --mount=type=ssh,target=/a.sock --mount=type=ssh,id=other,target=/b.sock echo "$SSH_AUTH_SOCK" > /first.txt
ARG SSH_AUTH_SOCK=/from-arg
RUN --mount=type=ssh echo "$SSH_AUTH_SOCK" > /arg.txt
FROM base AS env
ENV SSH_AUTH_SOCK=/from-env
RUN --mount=type=ssh echo "$SSH_AUTH_SOCK" > /env.txt
FROM main
COPY --from=env /env.txt /
"""
    _ssh_add_tools(tmp_path / "ctx" / "tools")
    ir = tmp_path / "graph.ir"
    out, _ = build(tmp_path, busybox_layout, {"Dockerfile": dockerfile}, "--ssh", f"default={sock}", "--ir-out", ir)
    keys = (out / "keys.txt").read_text()
    assert fingerprint in keys and "irctl-parity" in keys, keys
    assert (out / "default.txt").read_text() == "/run/buildkit/ssh_agent.0\n"
    assert (out / "first.txt").read_text() == "/a.sock\n"
    assert (out / "arg.txt").read_text() == "/from-arg\n" and (out / "env.txt").read_text() == "/from-env\n"

    from ir.codec import load_document

    doc = load_document(ir.read_bytes())
    envs = [e for op in doc.ops.values() if op.exec for e in op.exec.env]
    assert not any(e.startswith("SSH_AUTH_SOCK=/run") or e.startswith("SSH_AUTH_SOCK=/a") for e in envs)
    assert str(sock) not in str(doc)
    moved = tmp_path / "elsewhere.sock"
    os.symlink(sock, moved)
    (tmp_path / "out2").mkdir()
    r = irctl("build", tmp_path / "ctx", "--progress", "json", "--cache-dir", tmp_path / "cache",
              "--build-context", f"base=oci-layout://{busybox_layout}:latest", "--ssh", f"default={moved}",
              "--output", f"type=local,dest={tmp_path / 'out2'}")
    assert r.code == 0, r.stderr
    assert [e for e in r.events() if e["kind"] == "started"] == []


IDS_DOCKERFILE = """\
FROM {base}
RUN echo "alice:x:1000:1000::/home/alice:/bin/sh" >> /etc/passwd && \\
    echo "bob:x:1001:1001::/:/bin/sh" >> /etc/passwd && \\
    echo "alice:x:1000:alice" >> /etc/group && echo "dev:x:2000:alice,bob" >> /etc/group && \\
    echo "ops:x:2001:bob,alice" >> /etc/group && echo "dev2:x:2000:alice" >> /etc/group
RUN echo "root: $(id)" > /ids && chmod 666 /ids
""" + "".join(f'USER {u}\nRUN echo "{u}: $(id)" >> /ids\n' for u in (
    "alice", "alice:dev", "1000", "1000:2001", "4242", "4242:2000", "root:dev", "bob", "0")) + """\
USER root
RUN rm /etc/passwd /etc/group
USER root:10
RUN echo "root:10 without passwd: $(id)" >> /ids
"""

# Current BuildKit (executor/oci/user.go): the groups of /etc/group listing the user, none besides
# the group given explicitly, none for a uid without a passwd entry, `uid:gid` and `root` taken
# without reading the files, and the primary gid always first among the groups
# (ensureAdditionalGids).  BuildKit v0.8 (the local dockerd) printed the same on debian; on busybox,
# whose `id` lists exactly the kernel's groups, it printed no `groups=` where only the primary
# group is there, and `bob` as groups=2000(dev),2001(ops).
IDS_BUSYBOX = """\
root: uid=0(root) gid=0(root) groups=0(root)
alice: uid=1000(alice) gid=1000(alice) groups=1000(alice),2000(dev),2001(ops)
alice:dev: uid=1000(alice) gid=2000(dev) groups=2000(dev)
1000: uid=1000(alice) gid=1000(alice) groups=1000(alice),2000(dev),2001(ops)
1000:2001: uid=1000(alice) gid=2001(ops) groups=2001(ops)
4242: uid=4242 gid=0(root) groups=0(root)
4242:2000: uid=4242 gid=2000(dev) groups=2000(dev)
root:dev: uid=0(root) gid=2000(dev) groups=2000(dev)
bob: uid=1001(bob) gid=1001 groups=1001,2000(dev),2001(ops)
0: uid=0(root) gid=0(root) groups=0(root)
root:10 without passwd: uid=0 gid=10 groups=10
"""
IDS_DEBIAN = IDS_BUSYBOX  # coreutils prints the primary group first whether or not it is listed


def test_user_groups_as_buildkit_on_busybox(tmp_path, busybox_layout):
    out, _ = build(tmp_path, busybox_layout, {"Dockerfile": IDS_DOCKERFILE.format(base="base")})
    assert (out / "ids").read_text() == IDS_BUSYBOX


def test_user_groups_as_buildkit_on_debian(tmp_path, busybox_layout):
    """The same on Debian (coreutils' ``id``), from the anchors' registry when it is there."""
    import urllib.request

    try:
        with urllib.request.urlopen("http://127.0.0.1:5000/v2/debian/tags/list", timeout=2) as r:
            if b"bookworm" not in r.read():
                raise OSError("no bookworm tag")
    except OSError:
        pytest.skip("no 127.0.0.1:5000/debian:bookworm (../shared/anchors/setup.sh makes it)")
    base = "127.0.0.1:5000/debian:bookworm"
    out, _ = build(tmp_path, busybox_layout, {"Dockerfile": IDS_DOCKERFILE.format(base=base)})
    assert (out / "ids").read_text() == IDS_DEBIAN
