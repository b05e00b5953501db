"""Exporters checked by real tools: skopeo and umoci read what we write; schemas; reproducibility."""

from __future__ import annotations

import json
import os
import stat
import tarfile
from pathlib import Path

import jsonschema
import pytest

from backend.store.blobs import BlobStore
from backend.export.docker import export_docker
from backend.errors import ExportError
from backend.export.image import (ExportOptions, ImageSpec, LayerSource, build_image,
                                  reconcile_history)
from backend.export.local import export_local, export_tar, flatten_layers
from backend.export.oci import export_oci
from backend.oci.layout import MT_OCI_MANIFEST, LayoutError, OCILayout, Platform
from tests.support.layers import ROOT, snapshot
from tests.support.tools import run

SCHEMAS = Path(__file__).parent / "oci_schemas"
SDE = 1_700_000_000
needs_root = pytest.mark.skipif(not ROOT, reason="whiteouts and opaque dirs need root")


def schema(name: str) -> dict:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


def validate(doc: dict, name: str) -> None:
    jsonschema.Draft4Validator(schema(name)).validate(doc)


@pytest.fixture
def image_spec(tmp_path: Path, busybox_rootfs: Path) -> ImageSpec:
    app = tmp_path / "l-app"
    (app / "app").mkdir(parents=True)
    (app / "app" / "hello.sh").write_text("#!/bin/sh\necho hello\n")
    os.chmod(app / "app" / "hello.sh", 0o755)
    os.symlink("/app/hello.sh", app / "hello")
    (app / "etc").mkdir()
    if ROOT:
        os.mknod(app / "etc" / "group", stat.S_IFCHR, os.makedev(0, 0))  # delete /etc/group
        (app / "usr").mkdir()
        (app / "usr" / "sbin").mkdir()
        os.setxattr(app / "usr" / "sbin", "trusted.overlay.opaque", b"y")  # hide every sbin applet
        (app / "usr" / "sbin" / "only").write_text("only me")
    empty = tmp_path / "l-empty"
    empty.mkdir()
    edit = tmp_path / "l-edit"
    (edit / "etc").mkdir(parents=True)
    (edit / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh\n")
    return ImageSpec(
        layers=[LayerSource(busybox_rootfs), app, empty, edit],
        config={"Env": ["PATH=/usr/bin:/bin", "GREETING=hi"], "Cmd": ["/hello"], "WorkingDir": "/app",
                "User": "app", "Labels": {"org.example": "yes"}, "ExposedPorts": {"8080/tcp": {}},
                "StopSignal": "SIGTERM", "Entrypoint": None},
        history=[{"created_by": "FROM busybox"}, {"created_by": "ENV GREETING=hi", "empty_layer": True},
                 {"created_by": "COPY app /app"}, {"created_by": "RUN true"}, {"created_by": "RUN edit passwd"}],
        platform={"os": "linux", "architecture": Platform.host().architecture},
        annotations={"org.opencontainers.image.title": "test"},
    )


def test_build_image_config_and_manifest(tmp_path: Path, image_spec: ImageSpec) -> None:
    store = BlobStore(tmp_path / "store")
    img = build_image(image_spec, store, ExportOptions(source_date_epoch=SDE))
    validate(img.config, "config")
    validate(img.manifest, "manifest")
    assert img.manifest["mediaType"] == MT_OCI_MANIFEST
    assert len(img.layers) == 3  # the empty layer is skipped
    assert img.config["rootfs"]["diff_ids"] == [b.diff_id for b in img.layers]
    hist = img.config["history"]
    assert [h.get("empty_layer", False) for h in hist] == [False, True, False, True, False]
    assert sum(not h.get("empty_layer") for h in hist) == len(img.layers)
    assert {h["created"] for h in hist} == {img.config["created"]} == {"2023-11-14T22:13:20Z"}
    assert img.config["config"]["Cmd"] == ["/hello"] and "Entrypoint" not in img.config["config"]
    assert img.manifest["annotations"] == {"org.opencontainers.image.title": "test"}
    for d in [img.manifest["config"], *img.manifest["layers"]]:
        assert store.size(d["digest"]) == d["size"]
        store.verify(d["digest"])
    assert store.read_bytes(img.digest) == img.manifest_bytes


def test_reconcile_history() -> None:
    c = "T"
    # fewer entries than layers (a base history left out): the entries pair with the newest layers,
    # the oldest get generic entries first, so no entry shifts onto another step's layer
    assert reconcile_history([{"created_by": "a"}], [True, True], c) == [
        {"created": c, "created_by": "irctl", "comment": "layer without history entry"},
        {"created_by": "a", "created": c}]
    # more entries than layers: the surplus becomes empty_layer
    assert reconcile_history([{"created_by": "a"}, {"created_by": "b"}], [True], c) == [
        {"created_by": "a", "created": c}, {"created_by": "b", "created": c, "empty_layer": True}]
    # an entry paired with a skipped (empty) layer becomes empty_layer
    assert reconcile_history([{"created_by": "a", "empty_layer": False}], [False], c) == [
        {"created_by": "a", "created": c, "empty_layer": True}]



def test_reconcile_history_dates_entries_by_their_layers_time() -> None:
    """BuildKit's rule: a layer's entry takes its layer's time, an empty entry the time before it, or
    (before any new layer) the first new layer's; a dated entry (a base image's) keeps its own."""
    e = {"empty_layer": True}
    history = [{"created_by": "base", "created": "B"}, {"created_by": "ENV", **e}, {"created_by": "RUN 1"},
               {"created_by": "LABEL", **e}, {"created_by": "RUN 2"}, {"created_by": "CMD", **e}]
    got = reconcile_history(history, [True, True, True], "NOW", [None, "T1", "T2"])
    assert [h["created"] for h in got] == ["B", "T1", "T1", "T1", "T2", "T2"]
    # a layer without a history entry takes its own time; nothing dated at all: the fallback
    assert reconcile_history([], [True], "NOW", ["T1"])[0]["created"] == "T1"
    assert [h["created"] for h in reconcile_history([{"created_by": "ENV", **e}], [], "NOW", [])] == ["NOW"]
    # metadata only, after a base: the base's last time (BuildKit too)
    assert reconcile_history([{"created": "B"}, {"created_by": "ENV", **e}], [False], "NOW", [None])[1]["created"] == "B"

def test_unknown_config_key_rejected(tmp_path: Path) -> None:
    (tmp_path / "l").mkdir()
    with pytest.raises(ExportError, match="unknown image config keys: Cmdd"):
        build_image(ImageSpec(layers=[tmp_path / "l"], config={"Cmdd": ["x"]}), BlobStore(tmp_path / "s"))


def test_oci_tar_read_by_skopeo_and_umoci(tmp_path: Path, image_spec: ImageSpec) -> None:
    store = BlobStore(tmp_path / "store")
    out = tmp_path / "image.tar"
    top, [img] = export_oci(image_spec, store, out, ref_name="latest", options=ExportOptions(source_date_epoch=SDE))
    info = json.loads(run("skopeo", "inspect", f"oci-archive:{out}:latest"))
    assert info["Digest"] == img.digest
    assert info["Layers"] == [b.digest for b in img.layers]
    assert "GREETING=hi" in info["Env"]
    raw_config = json.loads(run("skopeo", "inspect", "--config", "--raw", f"oci-archive:{out}:latest"))
    assert raw_config == img.config
    with tarfile.open(out) as tf:
        names = tf.getnames()
        assert names[:2] == ["blobs", "blobs/sha256"] and {"index.json", "oci-layout"} <= set(names)
        assert {m.mtime for m in tf.getmembers()} == {SDE}
        tf.extractall(tmp_path / "layout", filter="fully_trusted")
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    validate(index, "index")
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "latest"
    run("umoci", "unpack", "--image", f"{tmp_path / 'layout'}:latest", str(tmp_path / "bundle"))
    flat = flatten_layers(image_spec.layers, tmp_path / "flat")
    assert snapshot(tmp_path / "bundle" / "rootfs", mtimes=False, skip_xattrs=("trusted.",)) == \
        snapshot(flat, mtimes=False, skip_xattrs=("trusted.",))
    rootfs = tmp_path / "bundle" / "rootfs"
    assert (rootfs / "app" / "hello.sh").read_text().endswith("echo hello\n")
    assert "app:x:1000" in (rootfs / "etc" / "passwd").read_text()
    if ROOT:
        assert not (rootfs / "etc" / "group").exists()
        assert os.listdir(rootfs / "usr" / "sbin") == ["only"]


def test_oci_dir_layout(tmp_path: Path, image_spec: ImageSpec) -> None:
    store = BlobStore(tmp_path / "store")
    top, [img] = export_oci(image_spec, store, tmp_path / "dir", tar=False, ref_name="v1")
    info = json.loads(run("skopeo", "inspect", f"oci:{tmp_path / 'dir'}:v1"))
    assert info["Digest"] == img.digest
    with OCILayout(tmp_path / "dir") as layout:
        got = layout.resolve("v1")
        assert got.raw == img.manifest_bytes
        with pytest.raises(LayoutError, match="no image named 'nope' \\(have: v1\\)"):
            layout.resolve("nope")


def test_same_source_date_epoch_same_digests(tmp_path: Path, image_spec: ImageSpec) -> None:
    results = []
    for i in range(2):
        store = BlobStore(tmp_path / f"store{i}")
        if i == 1:  # touch everything in the non-base layers: clamped away by SOURCE_DATE_EPOCH
            for layer in image_spec.layers[1:]:
                for root, dirs, files in os.walk(layer):
                    for n in dirs + files:
                        os.utime(os.path.join(root, n), follow_symlinks=False)
        top, [img] = export_oci(image_spec, store, tmp_path / f"o{i}.tar", ref_name="latest",
                                options=ExportOptions(source_date_epoch=SDE))
        results.append((img.digest, img.config_bytes, (tmp_path / f"o{i}.tar").read_bytes()))
    assert results[0] == results[1]
    other = build_image(image_spec, BlobStore(tmp_path / "s3"), ExportOptions(source_date_epoch=SDE + 1))
    assert other.digest != results[0][0]


def test_zstd_and_docker_media_types(tmp_path: Path, image_spec: ImageSpec) -> None:
    store = BlobStore(tmp_path / "store")
    z = build_image(image_spec, store, ExportOptions(compression="zstd", source_date_epoch=SDE))
    assert {l["mediaType"] for l in z.manifest["layers"]} == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    d = build_image(image_spec, store, ExportOptions(media_types="docker", source_date_epoch=SDE))
    assert d.manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert d.manifest["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    assert {l["mediaType"] for l in d.manifest["layers"]} == {"application/vnd.docker.image.rootfs.diff.tar.gzip"}
    assert "annotations" not in d.manifest
    # same diff_ids: gzip blobs reused from the mapping, not recompressed
    g = build_image(image_spec, store, ExportOptions(source_date_epoch=SDE))
    assert [b.digest for b in g.layers] == [b.digest for b in d.layers]


def test_multi_platform_index(tmp_path: Path, image_spec: ImageSpec) -> None:
    store = BlobStore(tmp_path / "store")
    arm = ImageSpec(**{**image_spec.__dict__, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}})
    amd = ImageSpec(**{**image_spec.__dict__, "platform": {"os": "linux", "architecture": "amd64"}})
    top, imgs = export_oci([amd, arm], store, tmp_path / "multi", tar=False, ref_name="latest",
                           options=ExportOptions(source_date_epoch=SDE))
    assert top["mediaType"] == "application/vnd.oci.image.index.v1+json"
    validate(json.loads(store.read_bytes(top["digest"])), "index")
    with OCILayout(tmp_path / "multi") as layout:
        assert layout.resolve("latest", Platform.parse("linux/arm64")).descriptor["digest"] == imgs[1].digest
        assert layout.resolve("latest", Platform.parse("linux/amd64")).descriptor["digest"] == imgs[0].digest
        with pytest.raises(LayoutError, match="no image for platform linux/s390x .available: linux/amd64, "
                                              "linux/arm64/v8"):
            layout.resolve("latest", Platform.parse("linux/s390x"))
    info = json.loads(run("skopeo", "inspect", "--override-arch", "arm64", f"oci:{tmp_path / 'multi'}:latest"))
    assert info["Digest"] == top["digest"] and info["Architecture"] == "arm64"


def test_docker_archive(tmp_path: Path, image_spec: ImageSpec) -> None:
    store = BlobStore(tmp_path / "store")
    out = tmp_path / "docker.tar"
    img = export_docker(image_spec, store, out, names=["example.com/app:1.0", "app"])
    with tarfile.open(out) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
        repos = json.load(tf.extractfile("repositories"))  # type: ignore[arg-type]
        names = set(tf.getnames())
    assert manifest[0]["RepoTags"] == ["example.com/app:1.0", "app:latest"]
    assert manifest[0]["Config"] == "blobs/sha256/" + img.manifest["config"]["digest"][7:]
    assert set(manifest[0]["Layers"]) <= names
    assert repos == {"example.com/app": {"1.0": img.layers[-1].digest[7:]}, "app": {"latest": img.layers[-1].digest[7:]}}
    info = json.loads(run("skopeo", "inspect", f"docker-archive:{out}"))
    assert "GREETING=hi" in info["Env"]
    assert info["Layers"] == [b.diff_id for b in img.layers]  # docker-archive sources report diff_ids
    run("skopeo", "copy", f"docker-archive:{out}:app:latest", f"oci:{tmp_path / 'copied'}:x")
    with OCILayout(tmp_path / "copied") as layout:
        assert json.loads(layout.read_blob(layout.resolve("x").config_digest))["rootfs"] == img.config["rootfs"]


def test_local_and_tar_exports_agree(tmp_path: Path, image_spec: ImageSpec) -> None:
    local = export_local(image_spec, tmp_path / "local")
    with open(tmp_path / "rootfs.tar", "wb") as f:
        export_tar(image_spec, f, source_date_epoch=SDE)
    (tmp_path / "x").mkdir()
    run("tar", "--xattrs", "--numeric-owner", "-xpf", str(tmp_path / "rootfs.tar"), "-C", str(tmp_path / "x"))
    assert snapshot(tmp_path / "x", mtimes=False) == snapshot(local, mtimes=False)
    assert (local / "hello").is_symlink() and os.readlink(local / "hello") == "/app/hello.sh"
    assert (local / "bin" / "busybox").is_file()
    if ROOT:
        assert not (local / "etc" / "group").exists() and os.listdir(local / "usr" / "sbin") == ["only"]
        assert not any(stat.S_ISCHR(os.lstat(os.path.join(r, n)).st_mode)
                       for r, ds, fs in os.walk(local) for n in fs)


def test_read_busybox_layout(busybox_layout: Path, tmp_path: Path) -> None:
    with OCILayout(busybox_layout) as layout:
        img = layout.resolve("latest")
        store = BlobStore(tmp_path / "s")
        layout.copy_to_store(img, store)
        for d in img.layers:
            store.verify(d["digest"])


@needs_root
def test_pulled_base_layer_exported_as_the_original_blob(tmp_path: Path, busybox_layout: Path) -> None:
    from backend.oci.layerstore import extract_stored_layer

    store = BlobStore(tmp_path / "store")
    with OCILayout(busybox_layout) as layout:
        base = layout.resolve("latest")
        layout.copy_to_store(base, store)
        base_config = json.loads(layout.read_blob(base.config_digest))
    res = extract_stored_layer(store, base.layers[0], tmp_path / "base",
                               expected_diff_id=base_config["rootfs"]["diff_ids"][0])
    top = tmp_path / "top"
    top.mkdir()
    (top / "hello").write_text("hi")
    spec = ImageSpec(layers=[LayerSource(tmp_path / "base", res.diff_id), top])
    img = build_image(spec, store, ExportOptions(source_date_epoch=SDE))
    assert img.layers[0].digest == base.layers[0]["digest"]  # byte-identical to the base image's blob
    assert img.config["rootfs"]["diff_ids"][0] == base_config["rootfs"]["diff_ids"][0]
