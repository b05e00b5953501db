"""What ``irctl build`` shows while it works, through the real CLI: pulls layer by layer, plain
lines with BuildKit's elapsed times, one located error, no noise; and a mistyped stage name that
fails at once."""

from __future__ import annotations

import pytest

from tests.support.cli import irctl, write

pytestmark = pytest.mark.e2e


def test_mistyped_stage_name_fails_without_retrying_the_registry(tmp_path, busybox_ref, cache_env):
    """``--from=biuld`` is an image name on docker.io (legal, as in BuildKit); its lookup fails on a
    name that does not resolve (or a 404 where there is network), which is not retried."""
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref} AS build\nRUN echo hi > /x\n"
                                                 f"FROM {busybox_ref}\nCOPY --from=biuld /x /x\n"})
    r = irctl("build", ctx, "--progress", "plain", env=cache_env)
    assert r.code != 0
    assert "Dockerfile:4:6: \"biuld\" is neither a stage of this Dockerfile nor an image" in r.stderr
    assert "(did you mean build?)" in r.stderr
    assert "attempts" not in r.stderr, r.stderr  # one attempt, not five


def _push_with_layer_size(registry: str, busybox_ref: str, tag: str, size) -> str:
    """busybox's manifest again under ``tag``, its layer descriptor claiming ``size`` bytes (the real
    registry takes it: it checks that the blob exists, not its size)."""
    import json

    import httpx

    repo = busybox_ref.split("/", 1)[1].split(":")[0]
    accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
    got = httpx.get(f"http://{registry}/v2/{repo}/manifests/latest", headers={"Accept": accept})
    got.raise_for_status()
    manifest = json.loads(got.content)
    manifest["layers"][0]["size"] = size
    body = json.dumps(manifest).encode()
    put = httpx.put(f"http://{registry}/v2/{repo}/manifests/{tag}", content=body,
                    headers={"Content-Type": manifest.get("mediaType") or got.headers["Content-Type"]})
    assert put.status_code == 201, put.text
    return f"{registry}/{repo}:{tag}"


def test_pull_progress_in_plain_mode_is_bounded_per_layer(tmp_path, registry, busybox_ref, cache_env):
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\nRUN echo hi\n"})
    r = irctl("build", ctx, "--progress", "plain", env=cache_env)
    assert r.code == 0, r.stderr
    lines = r.stderr.splitlines()
    import re

    assert lines[0].startswith("#1 [1/2] FROM ") and re.fullmatch(r"#1 DONE \d+\.\ds", lines[1]), r.stderr
    download = [line for line in lines if line.startswith("#1 sha256:")]
    extract = [line for line in lines if line.startswith("#1 extracting sha256:")]
    assert len(download) == 2 and len(extract) == 2, r.stderr  # begun, done: never a line per chunk
    assert re.search(r" 0B / \d+(\.\d+)?[kM]B$", download[0]), r.stderr
    size = download[0].rsplit(" / ", 1)[1]
    assert download[1].endswith(f" {size} / {size} {download[1].split()[-2]} done"), r.stderr
    assert extract[1].endswith(" done"), r.stderr
    again = irctl("build", ctx, "--progress", "plain", "--no-cache", env=cache_env)
    assert again.code == 0 and "sha256:" not in again.stderr.replace(lines[0], ""), again.stderr  # pulled once
    assert "#1 CACHED" in again.stderr


@pytest.mark.parametrize("size", [10**18, 2**63 - 1, -5])
def test_hostile_layer_size_is_an_error_and_not_a_broken_display(tmp_path, registry, busybox_ref, cache_env, size):
    ref = _push_with_layer_size(registry, busybox_ref, f"size{abs(hash(str(size))) % 1000}", size)
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {ref}\nRUN echo hi\n"})
    r = irctl("build", ctx, "--progress", "plain", env=cache_env)
    assert r.code != 0
    assert "Traceback" not in r.stderr, r.stderr
    assert "error: " in r.stderr or "pulling layer" in r.stderr, r.stderr
    for line in r.stderr.splitlines():
        assert len(line) < 600, line
        if line.startswith("#1 sha256:"):  # a size shown is at most a few characters, whatever it claims
            assert len(line) <= len("#1 sha256:") + 64 + len(" 1.036MB / >999EB 12.3s done"), line


def test_plain_log_lines_carry_elapsed_seconds_and_a_failed_run_says_its_error_once(tmp_path, busybox_ref,
                                                                                     cache_env):
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\nRUN echo one && sleep 0.3 && echo two\n"
                                                 "RUN echo bad; exit 3\n"})
    r = irctl("build", ctx, "--progress", "plain", env=cache_env)
    assert r.code != 0
    import re

    one, two = (float(m) for m in re.findall(r"^#2 (\d+\.\d{3}) (?:one|two)$", r.stderr, re.M))
    assert two - one >= 0.25, r.stderr  # BuildKit's `#5 0.512 line`: seconds since the step started
    assert re.search(r"^#3 \d+\.\d{3} bad$", r.stderr, re.M), r.stderr
    assert r.stderr.count("did not complete successfully: exit code 3") == 1, r.stderr
    assert re.search(r"^#3 ERROR \d+\.\ds$", r.stderr, re.M), r.stderr
    tail = r.stderr[r.stderr.index("exit code 3"):]
    assert "Dockerfile:3" in tail and ">>> RUN echo bad; exit 3" in tail, r.stderr


def test_snapshotter_only_with_debug_or_when_it_is_a_slow_fallback(tmp_path, busybox_ref, cache_env):
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\nRUN echo hi\n"})
    quiet = irctl("build", ctx, "--progress", "plain", "--no-cache", env=cache_env)
    assert quiet.code == 0 and "snapshotter" not in quiet.stderr, quiet.stderr
    debug = irctl("build", ctx, "--progress", "plain", "--no-cache", "--debug", env=cache_env)
    assert debug.code == 0 and "=> snapshotter: overlay\n" in debug.stderr, debug.stderr
    slow = irctl("build", ctx, "--progress", "plain", "--no-cache", env={**cache_env, "IRCTL_SNAPSHOTTER": "copy"})
    assert slow.code == 0, slow.stderr
    assert "=> snapshotter: copy (as IRCTL_SNAPSHOTTER asks; each step copies its base, which is slower)" \
        in slow.stderr, slow.stderr
