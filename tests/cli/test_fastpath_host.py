"""The fast path's memos answer only a build for the same platform: a build without ``--platform``
is for the host, so a cache directory shared with a host of another architecture (a volume, a CI
cache restored elsewhere) must not hand it the first host's image."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tarfile

import pytest

from tests.support.cli import Result, irctl_argv


def build(*args, arch_cmd: tuple[str, ...] = ()) -> Result:
    p = subprocess.run([*arch_cmd, *irctl_argv("build", *args)], capture_output=True, text=True, timeout=120,
                       env=os.environ, stdin=subprocess.DEVNULL)
    return Result(p.returncode, p.stdout, p.stderr)


def architecture(oci_tar) -> str:
    with tarfile.open(oci_tar) as t:
        return json.load(t.extractfile("index.json"))["manifests"][0]["platform"]["architecture"]


def _linux32_works() -> bool:
    """util-linux's linux32 on an x86_64 host, and a seccomp profile that lets it set the personality."""
    return (platform.machine() == "x86_64" and shutil.which("linux32") is not None
            and subprocess.run(["linux32", "true"], capture_output=True).returncode == 0)


@pytest.mark.skipif(not _linux32_works(), reason="needs linux32 (util-linux) working on an x86_64 host")
def test_a_memo_of_one_host_does_not_answer_a_host_of_another_architecture(tmp_path):
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\nCOPY f /f\n")
    (tmp_path / "ctx" / "f").write_text("x")
    args = [tmp_path / "ctx", "--progress", "plain", "--cache-dir", tmp_path / "cache",
            "-o", f"type=oci,dest={tmp_path / 'img.tar'}"]
    first = build(*args)
    assert first.code == 0 and architecture(tmp_path / "img.tar") == "amd64", first.stderr
    # linux32: the same machine and cache, but `uname -m` says i686: irctl's host is linux/386 now
    other = build(*args, arch_cmd=("linux32",))
    assert other.code == 0, other.stderr
    assert "inputs unchanged" not in other.stderr and architecture(tmp_path / "img.tar") == "386", other.stderr
