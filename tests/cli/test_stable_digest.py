"""A rebuild that changes nothing gives the same image, byte for byte (issue 12, item 3).

Every history ``created`` time is the time the step's result was made, kept in the cache with the
result (BuildKit keeps its snapshots' creation times the same way), so a cached step keeps its time,
a re-run step gets a new one, and the image digest does not churn."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from tests.support.cli import irctl

pytestmark = pytest.mark.e2e


def _dockerfile(ref: str, last: str) -> str:
    return f"FROM {ref}\nENV A=1\nRUN echo a > /a\nLABEL x=y\nRUN {last}\nENV B=2\n"


def _layout(path: Path) -> tuple[str, dict]:
    """(manifest digest, config) of the single image in an OCI layout directory."""
    index = json.loads((path / "index.json").read_text())
    digest = index["manifests"][0]["digest"]
    manifest = json.loads((path / "blobs/sha256" / digest.split(":")[1]).read_text())
    config = json.loads((path / "blobs/sha256" / manifest["config"]["digest"].split(":")[1]).read_text())
    return digest, config


def _build(ctx: Path, dest: Path, env: dict, *extra: str) -> tuple[str, dict]:
    r = irctl("build", ctx, "--progress", "plain", "--output", f"type=oci,tar=false,dest={dest}", *extra, env=env)
    assert r.code == 0, r.stderr
    return _layout(dest)


def test_noop_rebuild_gives_the_same_digest_and_rerun_steps_new_times(tmp_path, busybox_ref, cache_env):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(_dockerfile(busybox_ref, "echo b > /b"))
    first, cfg1 = _build(ctx, tmp_path / "one", cache_env)
    second, cfg2 = _build(ctx, tmp_path / "two", cache_env)
    assert second == first  # manifest digest, hence config digest and history too
    assert cfg2 == cfg1
    times = [h["created"] for h in cfg1["history"]]
    base, new = times[:1], times[1:]  # busybox has one history entry; ours follow
    assert cfg1["created"] == times[-1]  # the image's time is its last step's, as BuildKit's
    assert new[0] == new[1]  # ENV before the first RUN takes that RUN's time; LABEL the one before it
    assert new[2] == new[1]
    assert new[4] == new[3]  # ENV after the last RUN takes its time
    assert base[0] != new[0]

    # only the last RUN changes: the steps before it keep their times, it (and what follows) gets a new one
    (ctx / "Dockerfile").write_text(_dockerfile(busybox_ref, "echo c > /c"))
    third, cfg3 = _build(ctx, tmp_path / "three", cache_env)
    assert third != first
    changed = [h["created"] for h in cfg3["history"]]
    assert changed[:4] == times[:4]
    assert changed[4] > times[4] and changed[5] == changed[4]

    # --no-cache re-runs every step: new times, though the first RUN's files are the same
    forced, cfg4 = _build(ctx, tmp_path / "four", cache_env, "--no-cache")
    again = [h["created"] for h in cfg4["history"]]
    assert again[0] == times[0]  # the base image's own history
    assert all(a > b for a, b in zip(again[1:], changed[1:]))
    assert forced != third


def test_noop_rebuild_gives_the_same_docker_archive_and_config(tmp_path, busybox_ref, cache_env):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(_dockerfile(busybox_ref, "echo b > /b"))
    configs = []
    for name in ("one.tar", "two.tar"):
        dest = tmp_path / name
        r = irctl("build", ctx, "--progress", "plain", "--output", f"type=docker,dest={dest}", "-t", "app:1",
                  env=cache_env)
        assert r.code == 0, r.stderr
        with tarfile.open(dest) as tf:
            configs.append(json.load(tf.extractfile("manifest.json"))[0]["Config"])  # type: ignore[arg-type]
    assert configs[0] == configs[1]
    assert (tmp_path / "one.tar").read_bytes() == (tmp_path / "two.tar").read_bytes()


def test_a_cache_written_before_result_times_gives_stable_digests(tmp_path, busybox_ref, cache_env):
    """Rows an older irctl wrote have no times: the layers' first commit times stand in, and they do
    not move either."""
    import sqlite3

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(_dockerfile(busybox_ref, "echo b > /b"))
    first, _ = _build(ctx, tmp_path / "one", cache_env)
    db = sqlite3.connect(Path(cache_env["IRCTL_CACHE_DIR"]) / "index.db")
    with db:
        for key, data in db.execute("SELECT key, outputs FROM results").fetchall():
            outputs = json.loads(data)
            for o in outputs:
                o.pop("created", None)
            db.execute("UPDATE results SET outputs=? WHERE key=?", (json.dumps(outputs), key))
    db.close()
    second, cfg2 = _build(ctx, tmp_path / "two", cache_env)
    third, cfg3 = _build(ctx, tmp_path / "three", cache_env)
    assert second == third
    assert all(h["created"] for h in cfg2["history"])


def test_noop_rebuild_pushes_the_same_digest(tmp_path, busybox_ref, registry, cache_env):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(_dockerfile(busybox_ref, "echo b > /b"))
    name = f"{registry}/irctl-test/stable:1"
    pushed = []
    for _ in range(2):
        r = irctl("build", ctx, "-t", name, "--push", "--progress", "quiet", env=cache_env)
        assert r.code == 0, r.stderr
        pushed += [line.split()[1] for line in r.stderr.splitlines() if line.startswith("pushed ")]
    assert len(pushed) == 2 and pushed[0] == pushed[1]
