"""``irctl.exporting.export`` over two platforms' images, read back by independent tools: skopeo picks
each platform out of the index (from a layout and from the registry), umoci unpacks it. The two
images are made from plain directories labelled linux/amd64 and linux/arm64 (the end-to-end
amd64+arm64 build is the multi-platform build's own test)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from backend.result import ImageMeta, Snapshot
from irctl.errors import UserError
from irctl.exporting import export
from irctl.options import Output, outputs

PLATFORMS = ("linux/amd64", "linux/arm64")


def images(tmp_path: Path) -> list[tuple[str, Snapshot]]:
    out = []
    for platform in PLATFORMS:
        arch = platform.split("/")[1]
        layer = tmp_path / f"layer-{arch}"
        (layer / "etc").mkdir(parents=True)
        (layer / "etc" / "arch").write_text(f"{arch}\n")
        meta = ImageMeta(config={"Cmd": ["cat", "/etc/arch"]}, platform={"os": "linux", "architecture": arch})
        out.append((platform, Snapshot(f"sha256:{arch:0<64}", layers=(layer,), image=meta)))
    return out


def run_export(tmp_path: Path, outs: list[Output], tags=(), **kw) -> tuple[list[dict], list[str]]:
    said: list[str] = []
    done = export(images(tmp_path), outs, list(tags), cache_root=tmp_path / "cache", insecure=(), emit=said.append,
                  **kw)
    return done, said


def skopeo(*args: str) -> str:
    return subprocess.run(["skopeo", *args], check=True, capture_output=True, text=True).stdout


def unpacked_arch(layout: Path, tag: str, bundle: Path) -> str:
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)], check=True, capture_output=True)
    return (bundle / "rootfs" / "etc" / "arch").read_text()


def test_oci_index_picked_apart_by_skopeo_and_umoci(tmp_path: Path) -> None:
    dest = tmp_path / "multi.tar"
    [done], said = run_export(tmp_path, outputs([f"type=oci,dest={dest}"]), ["app:1"])
    index = json.loads(skopeo("inspect", "--raw", f"oci-archive:{dest}:1"))
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [f"{m['platform']['os']}/{m['platform']['architecture']}" for m in index["manifests"]] == list(PLATFORMS)
    assert said == [f"exported OCI image index {done['metadata']['containerimage.digest']} to {dest}"]
    assert "containerimage.config.digest" not in done["metadata"]  # an index has no one config
    for arch in ("amd64", "arm64"):
        layout = tmp_path / f"copy-{arch}"
        skopeo("copy", "--quiet", "--override-arch", arch, f"oci-archive:{dest}:1", f"oci:{layout}:x")
        assert unpacked_arch(layout, "x", tmp_path / f"bundle-{arch}") == f"{arch}\n"


def test_push_then_pull_back_by_platform(tmp_path: Path, registry: str) -> None:
    name = f"{registry}/irctl-test/multi:1"
    [done], _ = run_export(tmp_path, [Output("registry", {"registry.insecure": "true"})], [name],
                           statements=lambda platform, snap: [("https://example.com/p", {"platform": platform})])
    index = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{name}"))
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    kinds = [(m["platform"]["architecture"], m.get("annotations", {}).get("vnd.docker.reference.type"))
             for m in index["manifests"]]
    assert kinds == [("amd64", None), ("arm64", None), ("unknown", "attestation-manifest"),
                     ("unknown", "attestation-manifest")]
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{name}")
    assert done["metadata"]["containerimage.digest"] == "sha256:" + hashlib.sha256(raw.encode()).hexdigest()
    layout = tmp_path / "pulled"
    skopeo("copy", "--quiet", "--src-tls-verify=false", "--override-arch", "arm64", f"docker://{name}",
           f"oci:{layout}:arm")
    assert unpacked_arch(layout, "arm", tmp_path / "bundle") == "arm64\n"
    att = index["manifests"][3]
    manifest = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{name.rsplit(':', 1)[0]}@"
                                 f"{att['digest']}"))
    assert manifest["layers"][0]["annotations"] == {"in-toto.io/predicate-type": "https://example.com/p"}
    assert att["annotations"]["vnd.docker.reference.digest"] == index["manifests"][1]["digest"]


def test_docker_manifest_list_with_oci_mediatypes_false(tmp_path: Path, registry: str) -> None:
    name = f"{registry}/irctl-test/multi-docker:1"
    run_export(tmp_path, [Output("registry", {"registry.insecure": "true", "oci-mediatypes": "false"})], [name])
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{name}"))
    assert raw["mediaType"] == "application/vnd.docker.distribution.manifest.list.v2+json"
    assert {m["mediaType"] for m in raw["manifests"]} == {"application/vnd.docker.distribution.manifest.v2+json"}
    assert [m["platform"]["architecture"] for m in raw["manifests"]] == ["amd64", "arm64"]


def test_docker_archive_refuses_several_platforms(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="^docker exporter does not currently support exporting manifest lists$"):
        run_export(tmp_path, outputs([f"type=docker,dest={tmp_path / 'd.tar'}"]))
    assert not (tmp_path / "d.tar").exists()


def test_local_writes_a_directory_per_platform(tmp_path: Path) -> None:
    asked: list[str] = []
    _, said = run_export(tmp_path, outputs([f"type=local,dest={tmp_path / 'out'}"]),
                         statements=lambda platform, snap: asked.append(platform) or [])
    assert asked == []  # nothing would keep a statement: none was made
    assert said[0] == "warning: type=local holds no attestations; none written there (type=oci or a push keeps them)"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["linux_amd64", "linux_arm64"]
    assert (tmp_path / "out" / "linux_arm64" / "etc" / "arch").read_text() == "arm64\n"
