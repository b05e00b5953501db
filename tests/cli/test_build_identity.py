"""What ``irctl build`` says about the image it wrote, as buildx says it: ``--iidfile``,
``--metadata-file``, ``-q``, ``--annotation`` and ``--provenance`` (a SLSA statement in an
attestation manifest), checked against what skopeo reads from the layout or the registry."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import irctl, write

pytestmark = pytest.mark.e2e

SECRET = "s3cr3t-value-that-must-not-leak"


def skopeo_raw(ref: str) -> bytes:
    return subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", ref], check=True,
                          capture_output=True).stdout


def blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


def test_quiet_prints_the_image_id_the_iidfile_and_metadata_file_hold(tmp_path, busybox_ref, cache_env):
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\nRUN echo q > /q\n"})
    iid, meta, out = tmp_path / "iid", tmp_path / "meta.json", tmp_path / "img.tar"
    r = irctl("build", ctx, "-q", "--iidfile", iid, "--metadata-file", meta, "-t", "app:1",
              "--output", f"type=oci,dest={out}", env=cache_env)
    assert r.code == 0, r.stderr
    assert r.stderr == ""
    raw = skopeo_raw(f"oci-archive:{out}:1")
    config = json.loads(raw)["config"]["digest"]
    assert r.stdout == config + "\n"  # one manifest: the image id is its config digest (buildx's rule)
    assert iid.read_text() == config
    m = json.loads(meta.read_text())
    manifest = "sha256:" + hashlib.sha256(raw).hexdigest()
    assert m["containerimage.digest"] == manifest and m["containerimage.config.digest"] == config
    assert m["containerimage.descriptor"]["digest"] == manifest
    assert m["containerimage.descriptor"]["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert m["containerimage.descriptor"]["annotations"]["config.digest"] == config
    assert m["image.name"] == "app:1"
    assert m["buildx.build.ref"].startswith("irctl/local/")


def test_quiet_failure_says_why_and_leaves_no_iidfile(tmp_path, busybox_ref, cache_env):
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\nRUN echo about to fail && exit 3\n"})
    iid = tmp_path / "iid"
    iid.write_text("sha256:stale")
    r = irctl("build", ctx, "-q", "--iidfile", iid, "--output", f"type=oci,dest={tmp_path / 'x.tar'}", env=cache_env)
    assert r.code == 1 and r.stdout == ""
    assert "Dockerfile:2" in r.stderr and "exit code 3" in r.stderr
    assert not iid.exists()


def test_provenance_max_names_secrets_by_id_never_by_value(tmp_path, busybox_ref, cache_env):
    dockerfile = (f"FROM {busybox_ref}\nARG GREETING=hi\n"
                  "RUN --mount=type=secret,id=tok test -s /run/secrets/tok && echo $GREETING > /g\n")
    ctx = write(tmp_path / "ctx", {"Dockerfile": dockerfile})
    (tmp_path / "tok").write_text(SECRET)
    out = tmp_path / "img"
    iid = tmp_path / "iid"
    r = irctl("build", ctx, "--progress", "plain", "--secret", f"id=tok,src={tmp_path / 'tok'}", "--build-arg",
              "GREETING=hello", "--provenance", "mode=max", "--iidfile", iid,
              "--output", f"type=oci,tar=false,dest={out}", "-t", "app:2", env=cache_env)
    assert r.code == 0, r.stderr
    for f in (out / "blobs" / "sha256").iterdir():
        assert SECRET.encode() not in f.read_bytes()
    top = json.loads((out / "index.json").read_text())["manifests"][0]
    assert iid.read_text() == top["digest"]  # an index (the attestation needs one): its digest is the id
    image, att = json.loads(blob(out, top["digest"]))["manifests"]
    assert att["annotations"] == {"vnd.docker.reference.digest": image["digest"],
                                  "vnd.docker.reference.type": "attestation-manifest"}
    [layer] = json.loads(blob(out, att["digest"]))["layers"]
    statement = json.loads(blob(out, layer["digest"]))
    assert statement["predicateType"] == "https://slsa.dev/provenance/v0.2"
    assert statement["subject"][0]["digest"] == {"sha256": image["digest"].split(":", 1)[1]}
    p = statement["predicate"]
    assert p["invocation"]["configSource"] == {"entryPoint": "Dockerfile",
                                               "digest": {"sha256": hashlib.sha256(dockerfile.encode()).hexdigest()}}
    assert p["invocation"]["environment"] == {"platform": "linux/amd64"}
    params = p["invocation"]["parameters"]
    assert params["secrets"] == [{"id": "tok", "optional": True}]
    assert params["args"] == {"build-arg:GREETING": "hello"}
    [material] = p["materials"]
    assert material["uri"].startswith("pkg:docker/") and "busybox@latest?platform=linux%2Famd64" in material["uri"]
    base = skopeo_raw(f"docker://{busybox_ref}")  # the material is the base as resolved
    assert material["digest"]["sha256"] == hashlib.sha256(base).hexdigest()
    steps = [s.get("description", "") for s in p["buildConfig"]["steps"]]
    assert any("RUN --mount=type=secret,id=tok" in s for s in steps)
    # mode=min: no build arguments, no secret ids, no steps (BuildKit's min)
    r = irctl("build", ctx, "--secret", f"id=tok,src={tmp_path / 'tok'}", "--build-arg", "GREETING=hello",
              "--provenance", "true", "--output", f"type=oci,tar=false,dest={tmp_path / 'min'}", env=cache_env)
    assert r.code == 0, r.stderr
    top = json.loads((tmp_path / "min" / "index.json").read_text())["manifests"][0]
    _, att = json.loads(blob(tmp_path / "min", top["digest"]))["manifests"]
    [layer] = json.loads(blob(tmp_path / "min", att["digest"]))["layers"]
    p = json.loads(blob(tmp_path / "min", layer["digest"]))["predicate"]
    assert set(p["invocation"]["parameters"]) == {"frontend"} and "buildConfig" not in p
    assert p["materials"] == [material]


def test_push_with_provenance_and_annotations(tmp_path, busybox_ref, registry, cache_env):
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\nRUN echo p > /p\n"})
    name = f"{registry}/irctl-test/attested:1"
    meta = tmp_path / "meta.json"
    r = irctl("build", ctx, "--progress", "quiet", "-t", name, "--push", "--provenance", "mode=min",
              "--annotation", "index:org.opencontainers.image.description=two words",
              "--annotation", "manifest-descriptor:org.example.where=descriptor",
              "--annotation", "org.example.default=manifest", "--metadata-file", meta, env=cache_env)
    assert r.code == 0, r.stderr
    raw = skopeo_raw(f"docker://{name}")
    index = json.loads(raw)
    assert json.loads(meta.read_text())["containerimage.digest"] == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert index["annotations"] == {"org.opencontainers.image.description": "two words"}
    image, att = index["manifests"]
    assert image["annotations"] == {"org.example.where": "descriptor"}
    assert att["platform"] == {"architecture": "unknown", "os": "unknown"}
    manifest = json.loads(skopeo_raw(f"docker://{name.rsplit(':', 1)[0]}@{image['digest']}"))
    assert manifest["annotations"] == {"org.example.default": "manifest"}


@pytest.mark.parametrize("flag, value, says", [
    ("--provenance", "mode=huge", "--provenance 'mode=huge': want true, false, min, max or mode=min|max"),
    ("--annotation", "manifest:novalue", "--annotation 'manifest:novalue': want [TYPE[PLATFORM]:]KEY=VALUE"),
    ("--annotation", "index[linux/amd64]:k=v", "an index annotation applies to every platform"),
    ("--iidfile", ".", ": Is a directory"),  # the stale id removed first: a directory there is no traceback
])
def test_bad_values_are_one_line_before_building(tmp_path, cache_env, flag, value, says):
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM scratch\nCOPY Dockerfile /\n"})
    r = irctl("build", ctx, flag, value, "--progress", "plain", "--output", f"type=oci,dest={tmp_path / 'o.tar'}",
              env=cache_env)
    assert r.code == 1
    assert says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_provenance_under_source_date_epoch_is_reproducible(tmp_path, busybox_ref, cache_env):
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\nCOPY Dockerfile /\n"})
    ids = []
    for n in (1, 2):
        iid = tmp_path / f"iid{n}"
        r = irctl("build", ctx, "--provenance", "mode=max", "--iidfile", iid, "--output",
                  f"type=oci,dest={tmp_path / f'{n}.tar'}", env={**cache_env, "SOURCE_DATE_EPOCH": "1700000000"})
        assert r.code == 0, r.stderr
        ids.append(iid.read_text())
    assert ids[0] == ids[1]  # no times, no random invocation id: the same index, attestation included
    index = json.loads(skopeo_raw(f"oci-archive:{tmp_path / '1.tar'}"))
    assert "sha256:" + hashlib.sha256(skopeo_raw(f"oci-archive:{tmp_path / '1.tar'}")).hexdigest() == ids[0]
    assert index["manifests"][1]["annotations"]["vnd.docker.reference.type"] == "attestation-manifest"
