"""``irctl build`` with a Python build file, end to end: found by its name, built with runc, the
image runs its CMD; an exception in the file fails with the file's line."""

from __future__ import annotations

import pytest

from tests.support.cli import irctl, run_image, write

BUILD = """\
from frontends.pydsl import arg, image, target

WHO = arg("WHO", "python")
words = image("busybox", name="words").run("echo hello > /w")
app = (image("busybox", name="app")
       .copy("/w", "/out/w", from_=words)
       .copy("msg.txt", "/out/")
       .workdir("/out")
       .env(WHO=WHO)
       .cmd("cat w msg.txt && echo from $WHO && pwd"))
target("default", app)
"""


@pytest.mark.e2e
def test_build_runs_an_explicit_build_py_and_the_image_runs(tmp_path, busybox_layout):
    ctx = write(tmp_path / "ctx", {"build.py": BUILD, "msg.txt": "from the context\n"})
    out = tmp_path / "image"
    r = irctl("build", ctx, "-f", ctx / "build.py", "--build-context", f"busybox=oci-layout://{busybox_layout}",
              "--build-arg", "WHO=dsl",
              "--progress", "plain", "--output", f"type=oci,tar=false,dest={out}", "-t", "app:v1",
              env={"IRCTL_CACHE_DIR": str(tmp_path / "cache")})
    assert r.code == 0, r.stderr
    assert run_image(out, "v1", tmp_path) == "hello\nfrom the context\nfrom dsl\n/out\n"


def test_an_exception_in_the_build_file_names_its_line(tmp_path):
    ctx = write(tmp_path / "ctx", {"build.py": BUILD.replace('.workdir("/out")', '.workdir(OUT)')})
    r = irctl("build", ctx, "--frontend", "pydsl", env={"IRCTL_CACHE_DIR": str(tmp_path / "cache")})
    assert r.code == 1
    assert r.stderr == "build.py:8: NameError: name 'OUT' is not defined\n"
