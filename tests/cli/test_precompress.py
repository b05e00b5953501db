"""Layers of the target image are compressed while later steps run (``backend.oci.precompress``): the
export is byte for byte what it was, another stage's layers are left alone, and a failed build
leaves only whole blobs."""

from __future__ import annotations

import hashlib
import sqlite3
import tarfile
import time
from pathlib import Path

import pytest

from tests.support.cli import irctl

pytestmark = pytest.mark.e2e
PRECOMPRESSED = "precompressed layer"


def dockerfile(ctx: Path, text: str) -> Path:
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(text)
    return ctx


def two_stages(base: str) -> str:
    return (f"FROM {base} AS build\n"
            "RUN seq 1 50000 > /b && seq 1 9999 > /only-in-build\n"
            f"FROM {base}\n"
            "RUN seq 1 400000 > /a && echo x > /x\n"
            "COPY --from=build /b /b\n"
            "RUN echo done > /c\n")


def compressed_rows(cache: Path) -> set[str]:
    with sqlite3.connect(cache / "blobs.db") as db:
        return {r[0] for r in db.execute("SELECT digest FROM compressed")}


def manifest_layers(oci_tar: Path) -> list[str]:
    import json

    with tarfile.open(oci_tar) as tf:
        index = json.load(tf.extractfile("index.json"))
        digest = index["manifests"][0]["digest"].split(":")[1]
        manifest = json.load(tf.extractfile(f"blobs/sha256/{digest}"))
    return [layer["digest"] for layer in manifest["layers"]]


@pytest.mark.parametrize("compression", ["gzip", "zstd,compression-level=5"])
def test_export_is_byte_identical_with_and_without_precompress(tmp_path, busybox_ref, compression):
    ctx = dockerfile(tmp_path / "ctx", two_stages(busybox_ref))
    out = {}
    for mode in ("1", "0"):
        dest = tmp_path / f"out-{mode}.tar"
        env = {"IRCTL_CACHE_DIR": str(tmp_path / f"cache-{mode}"), "IRCTL_PRECOMPRESS": mode,
               "SOURCE_DATE_EPOCH": "1700000000"}
        r = irctl("build", "--progress", "plain", "--debug", "--output",
                  f"type=oci,dest={dest},compression={compression}", ctx, env=env)
        assert r.code == 0, r.stderr
        assert (PRECOMPRESSED in r.stderr) == (mode == "1"), r.stderr
        out[mode] = dest.read_bytes()
    assert out["1"] == out["0"]


def test_only_the_target_images_layers_are_compressed(tmp_path, busybox_ref):
    ctx = dockerfile(tmp_path / "ctx", two_stages(busybox_ref))
    r = irctl("build", "--progress", "plain", ctx, env={"IRCTL_CACHE_DIR": str(tmp_path / "plain")})
    assert r.code == 0, r.stderr
    assert len(compressed_rows(tmp_path / "plain")) == 1  # no output: only busybox's own blob, from its pull
    # (the last step gives the worker a second: what is still queued when the solve ends is left to
    # the export)
    (ctx / "Dockerfile").write_text(two_stages(busybox_ref).replace("echo done", "sleep 1 && echo done"))
    cache = tmp_path / "cache"
    dest = tmp_path / "out.tar"
    r = irctl("build", "--progress", "plain", "--debug", "--output", f"type=oci,dest={dest}", ctx,
              env={"IRCTL_CACHE_DIR": str(cache)})
    assert r.code == 0, r.stderr
    # the image's RUN and COPY layers were compressed during the build; the build stage's layer (in
    # the store, not in the image) never was
    assert r.stderr.count(PRECOMPRESSED) >= 2, r.stderr
    assert compressed_rows(cache) == set(manifest_layers(dest))


def test_a_failing_later_step_leaves_only_whole_blobs(tmp_path, busybox_ref, cache_env):
    ctx = dockerfile(tmp_path / "ctx", f"FROM {busybox_ref}\n"
                                       "RUN head -c 30000000 /dev/urandom > /a\n"
                                       "RUN head -c 20000000 /dev/urandom > /b\n"
                                       "RUN exit 3\n")
    cache = Path(cache_env["IRCTL_CACHE_DIR"])
    t0 = time.monotonic()
    r = irctl("build", "--progress", "plain", "--output", f"type=oci,dest={tmp_path / 'out.tar'}", ctx,
              env=cache_env, timeout=120)
    assert r.code != 0, r.stderr
    assert time.monotonic() - t0 < 60
    assert not (tmp_path / "out.tar").exists()
    leftovers = [p.name for p in (cache / "tmp").iterdir() if p.name.startswith(("blob-", "ingest-"))]
    assert leftovers == []
    blobs = cache / "blobs" / "sha256"
    for p in blobs.iterdir():
        assert hashlib.sha256(p.read_bytes()).hexdigest() == p.name
    assert all((blobs / d.split(":")[1]).is_file() for d in compressed_rows(cache))
