"""``irctl build`` end to end: Dockerfile → IR → runc on overlayfs → an OCI image that runs."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support.cli import irctl, run_image, write

pytestmark = pytest.mark.e2e


def test_image_runs_its_cmd(tmp_path, busybox_ref, cache_env):
    ctx = write(tmp_path / "ctx", {
        "Dockerfile": f"""FROM {busybox_ref} AS words
RUN echo hello > /w
FROM {busybox_ref}
COPY --from=words /w /out/w
COPY msg.txt /out/
WORKDIR /out
CMD ["sh", "-c", "cat w msg.txt && pwd"]
""",
        "msg.txt": "from the context\n"})
    out = tmp_path / "image"
    r = irctl("build", ctx, "--progress", "plain", "--output", f"type=oci,tar=false,dest={out}", "-t", "app:v1",
              env=cache_env)
    assert r.code == 0, r.stderr
    assert run_image(out, "v1", tmp_path) == "hello\nfrom the context\n/out\n"
    inspect = subprocess.run(["skopeo", "inspect", "--config", f"oci:{out}:v1"], capture_output=True, text=True,
                             check=True)
    config = json.loads(inspect.stdout)["config"]
    assert config["Cmd"] == ["sh", "-c", "cat w msg.txt && pwd"]
    assert config["WorkingDir"] == "/out"


def test_second_build_is_all_cache_hits(tmp_path, busybox_ref, cache_env):
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\nRUN echo a > /a\nRUN echo b > /b\n"})
    first = irctl("build", ctx, "--progress", "json", env=cache_env)
    assert first.code == 0, first.stderr
    assert len([e for e in first.events() if e["kind"] == "started"]) >= 2
    # through the solver (an output forces it past the no-op fast path): every step a cache hit
    second = irctl("build", ctx, "--progress", "json", "--output", f"type=local,dest={tmp_path / 'out'}",
                   env=cache_env)
    assert second.code == 0, second.stderr
    assert [e for e in second.events() if e["kind"] == "started"] == []
    assert len([e for e in second.events() if e["kind"] == "cached"]) >= 2
    # and the fast path: nothing started, one summary event
    third = irctl("build", ctx, "--progress", "json", env=cache_env)
    assert [e for e in third.events() if e["kind"] == "started"] == []
    assert [e["description"] for e in third.events()] == ["build inputs unchanged: all 4 steps cached"]


def test_prune_all_keep_images_keeps_only_the_pulled_base(tmp_path, busybox_ref, cache_env):
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\nRUN echo a > /a\n"})
    assert irctl("build", ctx, env=cache_env).code == 0
    assert irctl("cache", "prune", "--keep-images", env=cache_env).code == 1  # goes with --all
    pruned = irctl("cache", "prune", "--all", "--keep-images", env=cache_env)
    assert pruned.code == 0, pruned.stderr
    du = irctl("cache", "du", env=cache_env).stdout
    assert "results: 0" in du and "layers:  1 " in du  # busybox's one layer, still unpacked
    again = irctl("build", ctx, "--progress", "json", env=cache_env)
    assert again.code == 0, again.stderr
    assert "[2/2] RUN echo a > /a" in [e["description"] for e in again.events() if e["kind"] == "started"]
    assert irctl("cache", "prune", "--all", env=cache_env).code == 0
    assert "layers:  0 " in irctl("cache", "du", env=cache_env).stdout


def test_failing_run_names_the_line_and_output(tmp_path, busybox_ref, cache_env):
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\n\nRUN echo about to fail && exit 3\n"})
    r = irctl("build", ctx, "--progress", "plain", env=cache_env)
    assert r.code == 1
    assert "Traceback" not in r.stderr
    assert "Dockerfile:3" in r.stderr
    assert "about to fail" in r.stderr
    assert "exit code 3" in r.stderr or "exit status 3" in r.stderr


def test_parse_error_is_located(tmp_path, cache_env):
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM scratch\nRUN --mout=type=cache,target=/x true\n"})
    r = irctl("build", ctx, env=cache_env)
    assert r.code != 0
    assert "Traceback" not in r.stderr
    assert "Dockerfile:2:5: unknown flag" in r.stderr
    assert "^" in r.stderr


def test_compile_then_validate_and_solve(tmp_path, busybox_ref, cache_env):
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\nRUN echo solved > /s\nCMD [\"cat\", \"/s\"]\n"})
    graph = tmp_path / "g.ir"
    r = irctl("compile", ctx, "-o", graph, env=cache_env)
    assert r.code == 0, r.stderr
    assert irctl("validate", graph).code == 0
    out = tmp_path / "image"
    r = irctl("solve", graph, "-o", f"type=oci,tar=false,dest={out}", "--tag", "solved:1", env=cache_env)
    assert r.code == 0, r.stderr
    assert run_image(out, "1", tmp_path) == "solved\n"


def test_push_and_pull_back(tmp_path, busybox_ref, registry, cache_env):
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\nRUN echo pushed > /p\nCMD [\"cat\", \"/p\"]\n"})
    name = f"{registry}/irctl-test/pushed:1"
    r = irctl("build", ctx, "-t", name, "--push", "--progress", "quiet", env=cache_env)
    assert r.code == 0, r.stderr
    layout = tmp_path / "pulled"
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{name}", f"oci:{layout}:1"],
                   check=True, capture_output=True)
    assert run_image(layout, "1", tmp_path) == "pushed\n"
