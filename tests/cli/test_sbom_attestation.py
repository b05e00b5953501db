"""``--sbom`` and ``--attest`` wired to the build: an SPDX document of the image's packages stored as
BuildKit stores its SBOM attestation (an in-toto statement in an attestation manifest of the index),
beside a provenance when both are asked for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import irctl, write

pytestmark = pytest.mark.e2e

STATUS = ("Package: hello\\nStatus: install ok installed\\nVersion: 2.10-3\\nArchitecture: amd64\\n\\n"
          "Package: gone\\nStatus: deinstall ok config-files\\nVersion: 1\\nArchitecture: amd64\\n")


def blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


def statements(layout: Path) -> dict[str, dict]:
    """predicateType -> statement, of the one image's attestation manifest."""
    top = json.loads((layout / "index.json").read_text())["manifests"][0]
    image, att = json.loads(blob(layout, top["digest"]))["manifests"]
    assert att["annotations"]["vnd.docker.reference.digest"] == image["digest"]
    out = {}
    for layer in json.loads(blob(layout, att["digest"]))["layers"]:
        st = json.loads(blob(layout, layer["digest"]))
        assert layer["annotations"]["in-toto.io/predicate-type"] == st["predicateType"]
        assert st["subject"][0]["digest"] == {"sha256": image["digest"].split(":", 1)[1]}
        out[st["predicateType"]] = st
    return out


@pytest.fixture
def ctx(tmp_path, busybox_ref):
    return write(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {busybox_ref}\nRUN mkdir -p /var/lib/dpkg && printf '{STATUS}' > /var/lib/dpkg/status\n")})


@pytest.mark.parametrize("flags", [["--sbom=true"], ["--attest", "type=sbom"]])
def test_sbom_lists_the_installed_packages(tmp_path, ctx, cache_env, flags):
    out = tmp_path / "img"
    r = irctl("build", ctx, *flags, "-t", "app:1", "--output", f"type=oci,tar=false,dest={out}", env=cache_env)
    assert r.code == 0, r.stderr
    [spdx] = statements(out).values()
    assert spdx["predicateType"] == "https://spdx.dev/Document"
    doc = spdx["predicate"]
    assert doc["spdxVersion"] == "SPDX-2.3"
    names = {(p["name"], p.get("versionInfo")) for p in doc["packages"]}
    assert ("hello", "2.10-3") in names and not any(n == "gone" for n, _ in names)  # only installed ones


def test_sbom_and_provenance_together_and_bad_values(tmp_path, ctx, cache_env):
    out = tmp_path / "img"
    r = irctl("build", ctx, "--sbom", "true", "--attest", "type=provenance,mode=max", "--output",
              f"type=oci,tar=false,dest={out}", env=cache_env)
    assert r.code == 0, r.stderr
    assert set(statements(out)) == {"https://spdx.dev/Document", "https://slsa.dev/provenance/v0.2"}
    for flag, value, says in (("--sbom", "generator=docker/scout-sbom-indexer", "generator= (a scanner image) is "
                                                                             "not supported"),
                              ("--attest", "type=vuln", "--attest 'type=vuln': want type=provenance")):
        r = irctl("build", ctx, flag, value, "--output", f"type=oci,dest={tmp_path / 'x.tar'}", env=cache_env)
        assert r.code == 1 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
