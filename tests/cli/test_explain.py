"""``irctl build --explain`` end to end: each reason class a step can miss the cache for, in words.

Every build passes ``--output`` (the no-op fast path answers before the solver, so it explains
nothing); ``explain`` maps each step that ran (its description without the ``[stage n/m]`` counter)
to the reasons printed for it with ``--progress json``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.support.cli import irctl, write

pytestmark = pytest.mark.e2e


def explain(ctx: Path, tmp_path: Path, env: dict, *args: str) -> dict[str, list[str]]:
    r = irctl("build", ctx, "--progress", "json", "--explain", "--output", f"type=local,dest={tmp_path / 'out'}",
              *args, env=env)
    assert r.code == 0, r.stderr
    return {e["description"].split("] ", 1)[-1]: e["reasons"] for e in r.events() if e["kind"] == "explain"}


def test_explain_names_the_context_files_a_copy_or_a_bind_mount_reads(tmp_path, busybox_ref, cache_env):
    pip = "RUN --mount=type=bind,source=requirements.txt,target=/r.txt cat /r.txt"
    ctx = write(tmp_path / "ctx", {
        "Dockerfile": f"FROM {busybox_ref}\n{pip}\nCOPY src /src\n",
        "requirements.txt": "flask\n", "src/app.py": "1\n", "src/util.py": "1\n", "notes.txt": "1\n"})
    first = explain(ctx, tmp_path, cache_env)
    assert first[pip] == ["first build of this target: no earlier successful build to compare with"]
    (ctx / "src" / "app.py").write_text("2\n")
    (ctx / "src" / "new.py").write_text("new\n")
    (ctx / "src" / "util.py").unlink()
    assert explain(ctx, tmp_path, cache_env) == {"COPY src /src": [
        "build context files it reads changed: src/app.py (changed), src/new.py (added), src/util.py (removed)"]}
    (ctx / "notes.txt").write_text("2\n")  # read by no step: nothing runs, nothing to explain
    assert explain(ctx, tmp_path, cache_env) == {}
    (ctx / "requirements.txt").write_text("flask\nrequests\n")
    assert explain(ctx, tmp_path, cache_env) == {pip: ["build context files it reads changed: requirements.txt (changed)"]}


def test_explain_names_the_build_arg_the_instruction_and_the_upstream_step(tmp_path, busybox_ref, cache_env):
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref} AS build\nARG V=1\nRUN echo $V > /v\n"
                                                 f"FROM {busybox_ref}\nCOPY --from=build /v /v\nRUN cat /v > /w\n"})
    explain(ctx, tmp_path, cache_env)
    why = explain(ctx, tmp_path, cache_env, "--build-arg", "V=2")
    assert why == {
        "RUN echo 2 > /v": ["the value of the build arg V changed"],
        "COPY --from=build /v /v": ["files it reads from [build 2/2] RUN echo 2 > /v changed: /v (changed)"],
        "RUN cat /v > /w": ["[stage-1 2/3] COPY --from=build /v /v re-ran and produced different files"]}
    (ctx / "Dockerfile").write_text((ctx / "Dockerfile").read_text().replace("echo $V", "echo x$V"))
    why = explain(ctx, tmp_path, cache_env, "--build-arg", "V=2")
    assert why["RUN echo x2 > /v"] == ["the command changed (was: [build 2/2] RUN echo 2 > /v)"]


def test_explain_names_a_base_image_whose_digest_changed(tmp_path, busybox_ref, registry, cache_env):
    base = f"{registry}/irctl-test/explain-base:1"
    for marker in ("one", "two"):
        push = write(tmp_path / f"base-{marker}", {"Dockerfile": f"FROM {busybox_ref}\nRUN echo {marker} > /m\n"})
        r = irctl("build", push, "-t", base, "--push", "--progress", "quiet", env=cache_env)
        assert r.code == 0, r.stderr
        if marker == "one":
            ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {base}\nRUN cat /m > /seen\nFROM {busybox_ref}\n"
                                                         f"RUN --mount=type=bind,from={base},source=/m,target=/x cat /x\n"
                                                         "COPY --from=0 /seen /seen\n"})
            explain(ctx, tmp_path, cache_env)
    why = explain(ctx, tmp_path, cache_env, "--pull")
    (reason,) = why["RUN cat /m > /seen"]
    assert re.fullmatch(f"the base image {re.escape(base)} changed: digest [0-9a-f]{{12}} -> [0-9a-f]{{12}}", reason)
    (mounted,) = [v for k, v in why.items() if k.endswith("cat /x")]  # a bind mount from= the image
    digests = reason.rpartition(": ")[2]
    assert mounted == [f"files it reads from the image {base} ({digests}) changed: /m (changed)"]


def test_explain_no_cache_and_a_pruned_result(tmp_path, busybox_ref, cache_env):
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\nRUN echo a > /a\n"})
    explain(ctx, tmp_path, cache_env)
    assert explain(ctx, tmp_path, cache_env, "--no-cache") == {"RUN echo a > /a": ["--no-cache: every step runs again"]}
    assert irctl("cache", "prune", "--all", env=cache_env).code == 0
    assert explain(ctx, tmp_path, cache_env) == {
        "RUN echo a > /a": ["its result from the previous build is no longer in the cache (pruned)"]}


def test_explain_plain_output_and_a_record_without_secret_values(tmp_path, busybox_ref, cache_env):
    secret = "s3cr3t-v4lue-1234"
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\nARG TOKEN\n"
                                                 f"RUN --mount=type=secret,id=tok echo {secret} $TOKEN > /x\n"})
    env = {**cache_env, "TOK": secret}
    for n in (1, 2):
        r = irctl("build", ctx, "--progress", "plain", "--explain", "--secret", "id=tok,env=TOK",
                  "--build-arg", f"TOKEN=argvalue{n}", "--output", f"type=local,dest={tmp_path / 'out'}", env=env)
        assert r.code == 0, r.stderr
    assert "why 1 step of " in r.stderr and "ran, compared with its build of " in r.stderr
    assert "\n => [2/2] RUN --mount=type=secret,id=tok echo **** argvalue2 > /x\n" in r.stderr
    assert "\n      the value of the build arg TOKEN changed\n" in r.stderr
    assert secret not in r.stderr.partition("why 1 step")[2]
    records = Path(cache_env["IRCTL_CACHE_DIR"]) / "explain"
    stored = b"".join(p.read_bytes() for p in records.rglob("*") if p.is_file())
    assert secret.encode() not in stored
    assert stored.count(b"argvalue2") == 1  # in the description only: an env value is kept as a keyed hash
    assert {oct(p.stat().st_mode & 0o077) for p in records.rglob("*")} == {"0o0"}  # private to the user
    assert os.stat(records).st_mode & 0o777 == 0o700


def test_a_build_killed_midway_leaves_the_previous_record(tmp_path, busybox_ref, cache_env):
    import signal
    import subprocess
    import sys

    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\nRUN echo a > /a\n"})
    explain(ctx, tmp_path, cache_env)
    records = list((Path(cache_env["IRCTL_CACHE_DIR"]) / "explain" / "records").glob("*.json"))
    before = [p.read_bytes() for p in records]
    (ctx / "Dockerfile").write_text(f"FROM {busybox_ref}\nRUN sleep 30\n")
    p = subprocess.Popen([sys.executable, "-m", "irctl", "build", str(ctx), "--progress", "json", "--output",
                          f"type=local,dest={tmp_path / 'out'}"], env={**os.environ, **cache_env},
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True,
                         start_new_session=True)
    try:
        for line in p.stderr:  # type: ignore[union-attr]
            if '"kind": "started"' in line and "sleep 30" in line:
                break
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    assert [p.read_bytes() for p in records] == before
    (ctx / "Dockerfile").write_text(f"FROM {busybox_ref}\nRUN sleep 0\n")
    assert explain(ctx, tmp_path, cache_env) == {"RUN sleep 0": ["the command changed (was: [2/2] RUN echo a > /a)"]}
