"""Several platforms' images and their attestations as one index (``backend.export.imageset``), and
the per-platform directories of ``type=local``/``type=tar``: checked against the OCI schemas and
BuildKit's attestation storage, with images made from plain directories (no build)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import jsonschema
import pytest

from backend.errors import ExportError
from backend.export.image import ExportOptions, ImageSpec, build_image
from backend.export.imageset import Annotations, build_set
from backend.export.local import export_local_platforms, export_tar_file
from backend.export.oci import export_oci
from backend.oci.layout import MT_DOCKER_LIST, MT_DOCKER_MANIFEST, MT_OCI_INDEX
from backend.store.blobs import BlobStore

SCHEMAS = Path(__file__).parent / "oci_schemas"
SDE = 1_700_000_000
AMD = {"os": "linux", "architecture": "amd64"}
ARM = {"os": "linux", "architecture": "arm64", "variant": "v8"}


def validate(doc: dict, name: str) -> None:
    jsonschema.Draft4Validator(json.loads((SCHEMAS / f"{name}.schema.json").read_text())).validate(doc)


def spec(tmp_path: Path, platform: dict) -> ImageSpec:
    layer = tmp_path / f"layer-{platform['architecture']}"
    (layer / "etc").mkdir(parents=True, exist_ok=True)
    (layer / "etc" / "arch").write_text(platform["architecture"] + "\n")
    return ImageSpec(layers=[layer], config={"Cmd": ["cat", "/etc/arch"]}, platform=dict(platform))


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "store")


def test_one_image_with_nothing_attached_is_its_manifest(tmp_path: Path, store: BlobStore) -> None:
    options = ExportOptions(source_date_epoch=SDE)
    alone = build_image(spec(tmp_path, AMD), store, options)
    built = build_set([spec(tmp_path, AMD)], store, options)
    assert not built.is_index
    assert built.top == alone.descriptor and built.top_bytes == alone.manifest_bytes


@pytest.mark.parametrize("media, list_type, manifest_type", [("oci", MT_OCI_INDEX, None),
                                                             ("docker", MT_DOCKER_LIST, MT_DOCKER_MANIFEST)])
def test_two_platforms_make_an_index_of_both(tmp_path: Path, store: BlobStore, media, list_type, manifest_type) -> None:
    built = build_set([spec(tmp_path, AMD), spec(tmp_path, ARM)], store,
                      ExportOptions(source_date_epoch=SDE, media_types=media))
    index = json.loads(built.top_bytes)
    assert built.top["mediaType"] == index["mediaType"] == list_type
    assert [m["platform"] for m in index["manifests"]] == [AMD, ARM]
    assert [m["digest"] for m in index["manifests"]] == [i.digest for i in built.images]
    if manifest_type:
        assert {m["mediaType"] for m in index["manifests"]} == {manifest_type}
    else:
        validate(index, "index")


def test_a_statement_is_stored_as_buildkit_stores_attestations(tmp_path: Path, store: BlobStore) -> None:
    predicate = {"buildType": "test", "materials": []}
    built = build_set([spec(tmp_path, AMD)], store, ExportOptions(source_date_epoch=SDE),
                      statements=[[("https://slsa.dev/provenance/v0.2", predicate)]], names=["reg.example/app:1"])
    assert built.is_index  # one platform, but an attestation needs an index (as BuildKit's)
    index = json.loads(built.top_bytes)
    validate(index, "index")
    image, att = index["manifests"]
    assert image["digest"] == built.images[0].digest
    assert att["platform"] == {"architecture": "unknown", "os": "unknown"}
    assert att["annotations"] == {"vnd.docker.reference.digest": image["digest"],
                                  "vnd.docker.reference.type": "attestation-manifest"}
    manifest = json.loads(store.read_bytes(att["digest"]))
    validate(manifest, "manifest")
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.in-toto+json"
    assert layer["annotations"] == {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"}
    statement = json.loads(store.read_bytes(layer["digest"]))
    assert statement["_type"] == "https://in-toto.io/Statement/v0.1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v0.2" and statement["predicate"] == predicate
    assert statement["subject"] == [{"name": "pkg:docker/reg.example/app@1?platform=linux%2Famd64",
                                     "digest": {"sha256": image["digest"].split(":", 1)[1]}}]
    config = json.loads(store.read_bytes(manifest["config"]["digest"]))
    assert config["rootfs"]["diff_ids"] == [layer["digest"]]


def test_statements_refuse_docker_media_types(tmp_path: Path, store: BlobStore) -> None:
    with pytest.raises(ExportError, match="attestations need OCI media types"):
        build_set([spec(tmp_path, AMD)], store, ExportOptions(media_types="docker"), statements=[[("p", {})]])


def test_annotations_go_where_buildx_puts_them(tmp_path: Path, store: BlobStore) -> None:
    notes = Annotations(manifest={"": {"all": "m"}, "linux/arm64/v8": {"only": "arm"}},
                        manifest_descriptor={"linux/amd64": {"d": "amd"}}, index={"i": "x"},
                        index_descriptor={"top": "y"})
    top, images = export_oci([spec(tmp_path, AMD), spec(tmp_path, ARM)], store, tmp_path / "lay", tar=False,
                             ref_name="v1", options=ExportOptions(source_date_epoch=SDE), annotations=notes)
    assert top["annotations"] == {"top": "y", "org.opencontainers.image.ref.name": "v1"}
    assert json.loads((tmp_path / "lay" / "index.json").read_text())["manifests"] == [top]
    index = json.loads(store.read_bytes(top["digest"]))
    assert index["annotations"] == {"i": "x"}
    assert [m.get("annotations") for m in index["manifests"]] == [{"d": "amd"}, None]
    assert images[0].manifest["annotations"] == {"all": "m"}
    assert images[1].manifest["annotations"] == {"all": "m", "only": "arm"}


def test_index_descriptor_annotation_without_an_index_is_refused(tmp_path: Path, store: BlobStore) -> None:
    with pytest.raises(ExportError, match="index-descriptor annotations need an index"):
        export_oci(spec(tmp_path, AMD), store, tmp_path / "lay", tar=False,
                   annotations=Annotations(index_descriptor={"k": "v"}))


def test_an_index_annotation_never_turns_one_image_into_an_index(tmp_path: Path, store: BlobStore) -> None:
    """BuildKit refuses it (``index annotations not supported for single platform export``); with an
    attestation there is an index anyway, and the annotation goes on it."""
    with pytest.raises(ExportError, match="index annotations not supported for single platform export"):
        export_oci(spec(tmp_path, AMD), store, tmp_path / "lay", tar=False, annotations=Annotations(index={"k": "v"}))
    built = build_set([spec(tmp_path, AMD)], store, ExportOptions(), statements=[[("p", {})]],
                      annotations=Annotations(index={"k": "v"}))
    assert json.loads(built.top_bytes)["annotations"] == {"k": "v"}


def test_local_and_tar_write_a_directory_per_platform(tmp_path: Path, store: BlobStore) -> None:
    both = [("linux/amd64", spec(tmp_path, AMD)), ("linux/arm/v7", spec(tmp_path, {**ARM, "architecture": "arm",
                                                                                     "variant": "v7"}))]
    export_local_platforms(both, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["linux_amd64", "linux_arm_v7"]
    assert (tmp_path / "out" / "linux_arm_v7" / "etc" / "arch").read_text() == "arm\n"
    export_tar_file(both, tmp_path / "out.tar", memo_root=store.root, source_date_epoch=SDE)
    with tarfile.open(tmp_path / "out.tar") as tf:
        names = tf.getnames()
        assert tf.extractfile("linux_amd64/etc/arch").read() == b"amd64\n"
        assert tf.getmember("linux_arm_v7").isdir()
    assert {n.split("/", 1)[0] for n in names} == {"linux_amd64", "linux_arm_v7"}
    export_local_platforms(both, tmp_path / "merged", split=False)  # platform-split=false: one tree
    assert (tmp_path / "merged" / "etc" / "arch").read_text() == "arm\n"


@pytest.mark.parametrize("name, purl", [
    ("docker.io/library/busybox:1.36", "pkg:docker/busybox@1.36?platform=linux%2Farm64%2Fv8"),
    ("docker.io/team/app", "pkg:docker/team/app@latest?platform=linux%2Farm64%2Fv8"),
    ("127.0.0.1:5000/app:2", "pkg:docker/127.0.0.1:5000/app@2?platform=linux%2Farm64%2Fv8"),
])
def test_subjects_and_materials_are_named_as_buildkit_names_them(name: str, purl: str) -> None:
    from backend.export.imageset import docker_purl

    assert docker_purl(name, "linux/arm64/v8") == purl
