"""``--load`` as an unprivileged user: irctl builds in its own user namespace, and the image must land in
the user's own podman store (``~/.local/share/containers``), where the user's podman, run outside irctl,
finds it with the id irctl reported and owners it can use; a Docker socket the user may not use is one line
that says why, never an image loaded somewhere else."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.rootless.conftest import USER, UserCLI
from tests.support.baseimage import make_busybox_layout

pytestmark = pytest.mark.e2e

ANCHOR_SOCKET = "/run/anchor-docker.sock"


@pytest.fixture
def work(user_cli: UserCLI):
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    if Path("/var/run/docker.sock").exists():
        pytest.skip("/var/run/docker.sock exists: --load would rightly prefer that Docker over podman")
    work = Path(tempfile.mkdtemp(prefix="load.", dir=user_cli.root))
    make_busybox_layout(work / "base")
    (work / "ctx").mkdir()
    (work / "ctx" / "Dockerfile").write_text('FROM base\nRUN echo ran > /file && chown 1000:1000 /file\n'
                                             'CMD ["cat", "/file"]\n')
    user_cli.chown(work)
    yield work
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(user_cli.home / ".local", ignore_errors=True)  # the user's podman store (subordinate owners)
    shutil.rmtree(user_cli.home / ".cache", ignore_errors=True)


def _user_podman(user_cli: UserCLI, *args: str) -> subprocess.CompletedProcess:
    """The user's podman, outside any namespace of irctl's, with the same HOME."""
    return subprocess.run(["runuser", "-u", USER, "--", *user_cli.env(), "podman", *args],
                          capture_output=True, text=True, cwd="/", timeout=120)


def test_rootless_load_goes_to_the_users_own_podman_store(user_cli: UserCLI, work: Path):
    r = user_cli.run("build", str(work / "ctx"), "--build-context", f"base=oci-layout://{work / 'base'}", "--load",
                     "-t", "irctl-rootless-load:v1")
    assert r.returncode == 0, r.stderr
    uid = user_cli.pw.pw_uid
    m = re.search(r"^loaded irctl-rootless-load:v1 \(image id (sha256:[0-9a-f]{64})\) into "
                  rf"podman \(containers-storage, rootless, uid {uid}\)$", r.stderr, re.M)
    assert m, r.stderr
    inspect = _user_podman(user_cli, "image", "inspect", "irctl-rootless-load:v1")
    assert inspect.returncode == 0, inspect.stderr
    image = json.loads(inspect.stdout)[0]
    assert "sha256:" + image["Id"] == m[1]
    assert image["RepoTags"] == ["localhost/irctl-rootless-load:v1"]
    store = user_cli.home / ".local" / "share" / "containers" / "storage"
    assert store.is_dir() and store.stat().st_uid == uid  # the user's own store, not root's
    # the file the build chowned to 1000 is owned, on disk, by the user's subordinate id for 1000: podman's own
    # mapping, so the user's podman sees 1000 inside as irctl did
    files = [p for p in store.rglob("file") if p.is_file() and p.read_bytes() == b"ran\n"]
    assert files, "the loaded layer is not in the user's store"
    sub_start = int(next(line.split(":")[1] for line in Path("/etc/subuid").read_text().splitlines()
                         if line.split(":")[0] in (USER, str(uid))))
    assert {p.stat().st_uid for p in files} == {sub_start + 1000 - 1}


def test_rootless_docker_socket_without_permission_is_one_line(user_cli: UserCLI, work: Path):
    try:
        mode = os.stat(ANCHOR_SOCKET)
    except FileNotFoundError:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{ANCHOR_SOCKET} missing (CI must start the anchors: bash ../shared/anchors/setup.sh)")
        pytest.skip(f"{ANCHOR_SOCKET} missing")
    if mode.st_mode & stat.S_IWOTH:
        pytest.skip(f"{ANCHOR_SOCKET} is writable by anyone here")
    r = user_cli.run("build", str(work / "ctx"), "--build-context", f"base=oci-layout://{work / 'base'}", "--load",
                     env={"DOCKER_HOST": f"unix://{ANCHOR_SOCKET}"})
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == (
        f"error: --load: Docker at unix://{ANCHOR_SOCKET} (DOCKER_HOST): permission denied for uid "
        f"{user_cli.pw.pw_uid} (whoever can use a Docker socket is root on its host: it is for root and the "
        "docker group)")
