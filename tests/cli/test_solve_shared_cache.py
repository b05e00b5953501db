"""``irctl solve`` with ``--cache-to``/``--cache-from``, as ``irctl build`` has them: a graph solved on
one machine (cache dir) is all hits on another, cache mounts included; an inline cache goes into
the image ``-o`` writes, and is said to go nowhere without one."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.cli import irctl, write

SDE = {"SOURCE_DATE_EPOCH": "0"}


def _graph(tmp_path: Path, base: str) -> Path:
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {base}\n"
                                   "RUN --mount=type=cache,target=/cache echo once > /cache/dl\n"
                                   "RUN echo solved > /s\n"})
    graph = tmp_path / "g.ir"
    r = irctl("compile", ctx, "-o", graph, env={"IRCTL_CACHE_DIR": str(tmp_path / "compile")})
    assert r.code == 0, r.stderr
    return graph


def _solve(graph: Path, cache: Path, *extra: str):
    r = irctl("solve", graph, "--progress", "plain", *extra, env={"IRCTL_CACHE_DIR": str(cache), **SDE})
    assert r.code == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1]), r.stderr


def test_solve_writes_and_reads_a_shared_cache(tmp_path, busybox_ref):
    graph = _graph(tmp_path, busybox_ref)
    shared = tmp_path / "shared"
    a, err = _solve(graph, tmp_path / "A", "--cache-to", f"type=local,dest={shared},mode=max,mounts=*")
    assert f"cache exported to {shared}" in err and "1 cache mounts;" in err, err
    b, err = _solve(graph, tmp_path / "B", "--cache-from", f"type=local,src={shared}")
    assert b["identity"] == a["identity"]
    runs = [line.split()[0] for line in err.splitlines() if " RUN " in line]
    assert len(runs) == 2 and all(f"{n} CACHED" in err and f"{n} DONE" not in err for n in runs), err  # none ran
    assert "3 steps imported" in err, err


def test_solve_inline_cache_goes_into_the_image_it_writes(tmp_path, busybox_ref):
    graph = _graph(tmp_path, busybox_ref)
    _, err = _solve(graph, tmp_path / "A", "--cache-to", "type=inline")
    assert "warning: --cache-to type=inline goes into an image" in err, err
    out = tmp_path / "image"
    _, err = _solve(graph, tmp_path / "A", "--cache-to", "type=inline", "-o", f"type=oci,tar=false,dest={out}",
                    "--tag", "solved:1")
    assert "type=inline goes into an image" not in err, err
    index = json.loads((out / "index.json").read_text())
    blob = lambda d: json.loads((out / "blobs" / "sha256" / d.split(":", 1)[1]).read_text())  # noqa: E731
    config = blob(blob(index["manifests"][0]["digest"])["config"]["digest"])
    assert config["irctl.cache.v1"]["records"], config
