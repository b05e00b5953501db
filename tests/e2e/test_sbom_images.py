"""``--sbom``'s generator on real images: the anchors' debian:bookworm, as pulled and after steps that
change its dpkg database in an upper layer, checked against ``dpkg-query`` run inside the image."""

from __future__ import annotations

import time
import urllib.request
from urllib.parse import quote

import pytest

from backend.export.sbom import sbom_predicate
from tests.e2e.conftest import Solving, read_file

pytestmark = pytest.mark.e2e

DEBIAN = "127.0.0.1:5000/debian:bookworm"
QUERY = "dpkg-query -W -f '${db:Status-Abbrev}|${Package}|${Version}|${Architecture}\\n' | grep '^ii' | cut -d'|' -f2-"


@pytest.fixture
def debian(solving: Solving):
    from ir import builder as b

    try:
        with urllib.request.urlopen("http://127.0.0.1:5000/v2/debian/tags/list", timeout=2) as r:
            if b"bookworm" not in r.read():
                raise OSError("no bookworm tag")
    except OSError:
        pytest.skip(f"no {DEBIAN} (../shared/anchors/setup.sh makes it)")
    return b.image(DEBIAN).with_env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")


def _deb(pred: dict) -> set[tuple[str, str, str]]:
    out = set()
    for p in pred["packages"][1:]:
        (ref,) = p["externalRefs"]
        assert ref["referenceLocator"].startswith(f"pkg:deb/debian/{quote(p['name'])}@")
        assert "distro=debian-12" in ref["referenceLocator"]
        arch = ref["referenceLocator"].split("arch=")[1].split("&")[0]
        out.add((p["name"], p["versionInfo"], arch))
    return out


def _listed(text: bytes) -> set[tuple[str, str, str]]:
    return {tuple(line.split("|")) for line in text.decode().splitlines()}  # type: ignore[misc]


def test_debian_packages_match_dpkg_query_and_follow_an_upper_layers_database(solving: Solving, debian) -> None:
    """As pulled, every installed package dpkg-query lists and nothing else; after ``dpkg --remove``
    in a step, the upper layer's status file wins (the package gone, the rest the same)."""
    pulled = debian.with_meta("query").run(["sh", "-c", QUERY + " > /pkgs"])
    removed = debian.with_meta("remove").run(
        ["sh", "-c", "dpkg --remove --force-depends e2fsprogs >/dev/null 2>&1; " + QUERY + " > /pkgs"])
    res = solving.solve({"pulled": pulled, "removed": removed})

    started = time.monotonic()
    pred = sbom_predicate(res["pulled"].layers, name=DEBIAN)
    took = time.monotonic() - started
    expected = _listed(read_file(res["pulled"], "/pkgs"))
    assert len(expected) > 70 and _deb(pred) == expected
    assert took < 5, f"{took:.2f} s for debian"
    assert sum(1 for p in pred["packages"][1:] if p["licenseDeclared"] != "NOASSERTION") > 60

    after = sbom_predicate(res["removed"].layers, name=DEBIAN)
    listed_after = _listed(read_file(res["removed"], "/pkgs"))
    assert "e2fsprogs" not in {name for name, _, _ in listed_after}
    assert _deb(after) == listed_after == {p for p in expected if p[0] != "e2fsprogs"}
