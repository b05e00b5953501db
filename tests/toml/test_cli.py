"""``irctl build`` with a TOML recipe, end to end: found by its name, built with runc, the image
runs its CMD; a bad recipe fails with the located message and nothing else."""

from __future__ import annotations

import pytest

from tests.support.cli import irctl, run_image, write

RECIPE = """\
[stages.words]
from = "busybox"
steps = [{ run = "echo hello > /w" }]

[stages.app]
from = "busybox"
steps = [
  { copy = "/w", from = "words", dest = "/out/w" },
  { copy = "msg.txt", dest = "/out/" },
  { workdir = "/out" },
  { env = { WHO = "toml" } },
]

[stages.app.config]
cmd = "cat w msg.txt && echo from $WHO && pwd"
"""


@pytest.mark.e2e
def test_build_finds_irctl_toml_and_the_image_runs(tmp_path, busybox_layout):
    ctx = write(tmp_path / "ctx", {"irctl.toml": RECIPE, "msg.txt": "from the context\n"})
    out = tmp_path / "image"
    r = irctl("build", ctx, "--build-context", f"busybox=oci-layout://{busybox_layout}", "--progress", "plain",
              "--output", f"type=oci,tar=false,dest={out}", "-t", "app:v1",
              env={"IRCTL_CACHE_DIR": str(tmp_path / "cache")})
    assert r.code == 0, r.stderr
    assert "[app 3/4] COPY msg.txt /out/" in r.stderr
    assert run_image(out, "v1", tmp_path) == "hello\nfrom the context\nfrom toml\n/out\n"


def test_a_bad_recipe_fails_with_its_line_and_key_path(tmp_path):
    ctx = write(tmp_path / "ctx", {"irctl.toml": RECIPE.replace('run = "echo', 'rnu = "echo')})
    r = irctl("build", ctx, env={"IRCTL_CACHE_DIR": str(tmp_path / "cache")})
    assert r.code == 1
    assert r.stderr == 'irctl.toml:3: stages.words.steps[0]: unknown step "rnu" (did you mean "run"?)\n'
