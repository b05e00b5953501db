"""``--sbom``'s generator on hand-made layers: each package database, the layer merge rules (whiteouts,
opaque dirs, symlinks resolved inside the image), hostile inputs (huge, deep, many, malformed,
links out), and the bytes being a function of the image alone. Real images: tests/e2e/test_sbom_images.py."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from backend.errors import ExportError
from backend.export import pkgdb
from backend.export.sbom import PREDICATE_TYPE, license_expression, sbom_predicate
from backend.fs import unionview
from backend.fs.layerformat import opaque_xattr
from backend.fs.unionview import UnionView

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="whiteouts and trusted.overlay xattrs need root")

DPKG_STATUS = """\
Package: libc6
Status: install ok installed
Architecture: amd64
Source: glibc
Version: 2.36-9+deb12u4
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Description: GNU C Library
 Contains the standard libraries.
 These include: libc, libm.
 .

Package: login
Status: install ok installed
Architecture: amd64
Source: shadow (1:4.13+dfsg1-1)
Version: 1:4.13+dfsg1-1+b1

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: BAD NAME
Status: install ok installed
Version: 1

this line is not a field
Package: broken
Version: 2

Package: spaced
Status: install ok installed
A key: with a space
Version: 3
"""

APK_INSTALLED = """\
C:Q1abc=
P:musl
V:1.2.4-r2
A:x86_64
L:MIT
o:musl
F:lib
R:libc.musl-x86_64.so.1

C:Q1def=
P:busybox
V:1.36.1-r15
A:x86_64
L:GPL-2.0-only
o:busybox

P:no-version
A:x86_64
"""


def _file(p: Path, text: str | bytes) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


def _whiteout(p: Path) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(p, stat.S_IFCHR, os.makedev(0, 0))


def _packages(pred: dict) -> dict[str, dict]:
    """purl -> SPDX package, the image's own package left out."""
    out = {}
    for p in pred["packages"]:
        for ref in p.get("externalRefs", ()):
            out[ref["referenceLocator"]] = p
    return out


def _debian(root: Path) -> None:
    _file(root / "etc/os-release", 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n')
    _file(root / "var/lib/dpkg/status", DPKG_STATUS)


def test_dpkg_status_gives_installed_packages_with_purls_and_counts_malformed(tmp_path: Path) -> None:
    _debian(tmp_path / "l0")
    _file(tmp_path / "l0/usr/share/doc/libc6/copyright",
          "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
          "Files: *\nCopyright: someone\nLicense: LGPL-2.1+\n\nFiles: x/*\nLicense: GPL-2+ or BSD-variant\n")
    warned: list[str] = []
    pred = sbom_predicate([tmp_path / "l0"], name="img", warn=warned.append)
    pkgs = _packages(pred)
    assert sorted(pkgs) == [
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12&upstream=glibc",
        "pkg:deb/debian/login@1:4.13%2Bdfsg1-1%2Bb1?arch=amd64&distro=debian-12&upstream=shadow",
    ]
    libc = pkgs["pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12&upstream=glibc"]
    assert (libc["name"], libc["versionInfo"]) == ("libc6", "2.36-9+deb12u4")
    assert libc["sourceInfo"].endswith(": /var/lib/dpkg/status")
    assert libc["licenseDeclared"] == "LicenseRef-BSD-variant AND GPL-2.0-or-later AND LGPL-2.1-or-later"
    assert {"licenseId": "LicenseRef-BSD-variant", "extractedText": "BSD-variant",
            "name": "BSD-variant"} in pred["hasExtractedLicensingInfos"]
    # "BAD NAME", the paragraph with a stray line and the key with a space: skipped, said once
    assert warned == ["sbom: /var/lib/dpkg/status: 3 malformed entries skipped"]
    assert "3 malformed entries skipped" in pred["comment"]


def test_predicate_is_an_spdx_23_document_with_the_image_as_root(tmp_path: Path) -> None:
    _debian(tmp_path / "l0")
    pred = sbom_predicate([tmp_path / "l0"], name="example.com/app:1", created=1700000000)
    assert PREDICATE_TYPE == "https://spdx.dev/Document"
    assert pred["spdxVersion"] == "SPDX-2.3" and pred["dataLicense"] == "CC0-1.0"
    assert pred["SPDXID"] == "SPDXRef-DOCUMENT" and pred["name"] == "example.com/app:1"
    assert pred["creationInfo"] == {"created": "2023-11-14T22:13:20Z", "creators": ["Tool: irctl"]}
    assert pred["documentNamespace"].startswith("https://irctl.invalid/spdx/example.com%2Fapp%3A1-")
    ids = {p["SPDXID"] for p in pred["packages"]}
    assert len(ids) == len(pred["packages"]) == 3
    rels = {(r["spdxElementId"], r["relationshipType"], r["relatedSpdxElement"]) for r in pred["relationships"]}
    assert ("SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-DocumentRoot-Image") in rels
    assert sum(1 for r in rels if r[1] == "CONTAINS") == 2
    for p in pred["packages"]:
        assert p["downloadLocation"] == "NOASSERTION" and p["filesAnalyzed"] is False


def test_same_image_gives_the_same_bytes_and_another_image_another_namespace(tmp_path: Path) -> None:
    _debian(tmp_path / "a")
    _debian(tmp_path / "b")
    _file(tmp_path / "b/usr/lib/python3/dist-packages/z-1.dist-info/METADATA", "Name: z\nVersion: 1\n")
    _file(tmp_path / "b/usr/lib/python3/dist-packages/a-1.dist-info/METADATA", "Name: a\nVersion: 1\n")
    shutil.copytree(tmp_path / "b", tmp_path / "c")  # other inode order, other mtimes
    one = json.dumps(sbom_predicate([tmp_path / "b"], name="x"), sort_keys=True)
    assert one == json.dumps(sbom_predicate([tmp_path / "c"], name="x"), sort_keys=True)
    assert json.loads(one)["creationInfo"]["created"] == "1970-01-01T00:00:00Z"
    other = sbom_predicate([tmp_path / "a"], name="x")
    assert other["documentNamespace"] != json.loads(one)["documentNamespace"]


def test_apk_database_with_licences_and_distro(tmp_path: Path) -> None:
    root = tmp_path / "l0"
    _file(root / "etc/os-release", "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\n")
    _file(root / "lib/apk/db/installed", APK_INSTALLED)
    warned: list[str] = []
    pkgs = _packages(sbom_predicate([root], name="alpine", warn=warned.append))
    assert sorted(pkgs) == ["pkg:apk/alpine/busybox@1.36.1-r15?arch=x86_64&distro=alpine-3.19.1",
                            "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64&distro=alpine-3.19.1"]
    assert pkgs["pkg:apk/alpine/busybox@1.36.1-r15?arch=x86_64&distro=alpine-3.19.1"]["licenseDeclared"] == \
        "GPL-2.0-only"
    assert pkgs["pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64&distro=alpine-3.19.1"]["sourceInfo"].endswith(
        "apk database: /lib/apk/db/installed")
    assert warned == ["sbom: /lib/apk/db/installed: 1 malformed entry skipped"]


def test_distroless_status_d_files_are_one_package_each(tmp_path: Path) -> None:
    root = tmp_path / "l0"
    _file(root / "var/lib/dpkg/status.d/base", "Package: base-files\nVersion: 12.4\nArchitecture: amd64\n")
    _file(root / "var/lib/dpkg/status.d/tzdata", "Package: tzdata\nVersion: 2024a-0\nArchitecture: all\n")
    _file(root / "var/lib/dpkg/status.d/tzdata.md5sums", "abc  usr/share/zoneinfo/UTC\n")
    pkgs = _packages(sbom_predicate([root], name="distroless"))
    # no os-release: the purl namespace is the ecosystem's, no distro qualifier
    assert sorted(pkgs) == ["pkg:deb/debian/base-files@12.4?arch=amd64", "pkg:deb/debian/tzdata@2024a-0?arch=all"]
    assert pkgs["pkg:deb/debian/tzdata@2024a-0?arch=all"]["sourceInfo"].endswith(
        ": /var/lib/dpkg/status.d/tzdata")


def test_python_and_npm_packages_found_anywhere_in_the_image(tmp_path: Path) -> None:
    root = tmp_path / "l0"
    site = root / "app/.venv/lib/python3.11/site-packages"
    _file(site / "Requests_OAuthlib-1.3.dist-info/METADATA",
          "Metadata-Version: 2.1\nName: Requests_OAuthlib\nVersion: 1.3.1\nLicense: ISC\n\nLicense: not me\n")
    _file(site / "six-1.16.0.egg-info", "Metadata-Version: 1.2\nName: six\nVersion: 1.16.0\n"
          "Classifier: License :: OSI Approved :: MIT License\n")
    _file(site / "junk-1.dist-info/METADATA", "no headers here\n")
    mods = root / "srv/web/node_modules"
    _file(mods / "left-pad/package.json", json.dumps({"name": "left-pad", "version": "1.3.0", "license": "WTFPL"}))
    _file(mods / "@babel/core/package.json", json.dumps({"name": "@babel/core", "version": "7.24.0",
                                                        "license": {"type": "MIT"}}))
    _file(mods / "@babel/core/node_modules/semver/package.json", json.dumps({"name": "semver", "version": "6.3.1"}))
    _file(mods / "left-pad/test/fixture/package.json", json.dumps({"name": "fixture", "version": "0.0.0"}))
    _file(mods / "broken/package.json", "[1, 2]")
    warned: list[str] = []
    pkgs = _packages(sbom_predicate([root], name="app", warn=warned.append))
    assert sorted(pkgs) == ["pkg:npm/%40babel/core@7.24.0", "pkg:npm/left-pad@1.3.0", "pkg:npm/semver@6.3.1",
                            "pkg:pypi/requests-oauthlib@1.3.1", "pkg:pypi/six@1.16.0"]
    assert pkgs["pkg:pypi/requests-oauthlib@1.3.1"]["licenseDeclared"] == "ISC"
    assert pkgs["pkg:pypi/six@1.16.0"]["licenseDeclared"] == "MIT"  # its trove classifier
    assert pkgs["pkg:npm/%40babel/core@7.24.0"]["licenseDeclared"] == "MIT"
    assert pkgs["pkg:npm/semver@6.3.1"]["sourceInfo"].endswith(
        ": /srv/web/node_modules/@babel/core/node_modules/semver/package.json")
    assert sorted(warned) == ["sbom: /app/.venv/lib/python3.11/site-packages: "
                              "1 malformed Python metadata file(s) skipped",
                              "sbom: /srv/web/node_modules: 1 malformed package.json file(s) skipped"]


def test_host_python_distributions_match_importlib_metadata(tmp_path: Path) -> None:
    """The host's own dist-packages (wheels' dist-info and Debian's egg-info), against the stdlib's reader."""
    host = Path("/usr/lib/python3/dist-packages")
    infos = [p for p in host.glob("*-info") if p.name.endswith((".dist-info", ".egg-info"))] if host.is_dir() else []
    if len(infos) < 3:
        pytest.skip("no Python distributions in /usr/lib/python3/dist-packages")
    dest = tmp_path / "l0/usr/lib/python3/dist-packages"
    dest.mkdir(parents=True)
    for p in infos:
        (shutil.copytree if p.is_dir() else shutil.copy)(p, dest / p.name)
    expected = {(d.metadata["Name"], d.version) for d in importlib.metadata.distributions(path=[str(dest)])}
    scan = pkgdb.scan_image(UnionView([tmp_path / "l0"]))
    assert {(p.name, p.version) for p in scan.packages} == expected
    assert scan.notes == []


def test_npm_modules_match_npm_ls(tmp_path: Path) -> None:
    """npm's own bundled modules (a real node_modules tree, scoped and nested), against ``npm ls``."""
    host = Path("/usr/lib/node_modules")
    if shutil.which("npm") is None or not (host / "npm/node_modules").is_dir():
        pytest.skip("no global npm")
    dest = tmp_path / "l0/usr/lib/node_modules"
    shutil.copytree(host, dest, symlinks=True)
    r = subprocess.run(["npm", "ls", "--global", "--all", "--json"], capture_output=True, text=True, timeout=60,
                       cwd=tmp_path)
    expected: set[tuple[str, str]] = set()

    def walk(node: dict) -> None:
        for name, dep in (node.get("dependencies") or {}).items():
            if "version" in dep:
                expected.add((name, dep["version"]))
            walk(dep)
    walk(json.loads(r.stdout))
    scan = pkgdb.scan_image(UnionView([tmp_path / "l0"]))
    found = {(p.name, p.version) for p in scan.packages}
    assert len(expected) > 50 and found == expected


@needs_root
def test_whiteouts_and_opaque_dirs_hide_what_is_below(tmp_path: Path) -> None:
    low, mid, top = tmp_path / "low", tmp_path / "mid", tmp_path / "top"
    _debian(low)
    _file(low / "lib/apk/db/installed", APK_INSTALLED)
    _file(low / "usr/lib/python3/dist-packages/old-1.dist-info/METADATA", "Name: old\nVersion: 1\n")
    _file(low / "usr/lib/python3/dist-packages/kept-1.dist-info/METADATA", "Name: kept\nVersion: 1\n")
    _file(low / "opt/node_modules/hidden/package.json", '{"name": "hidden", "version": "1.0.0"}')
    # mid: a newer status (upgraded libc6 only), the apk db whited out, one dist-info removed
    _file(mid / "var/lib/dpkg/status", "Package: libc6\nStatus: install ok installed\nVersion: 2.37\n"
          "Architecture: amd64\n")
    _whiteout(mid / "lib/apk/db/installed")
    _whiteout(mid / "usr/lib/python3/dist-packages/old-1.dist-info")
    # top: /opt/node_modules replaced by an opaque dir with another module
    _file(top / "opt/node_modules/shown/package.json", '{"name": "shown", "version": "2.0.0"}')
    os.setxattr(top / "opt/node_modules", opaque_xattr(), b"y")
    pkgs = _packages(sbom_predicate([low, mid, top], name="x"))
    assert sorted(pkgs) == ["pkg:deb/debian/libc6@2.37?arch=amd64&distro=debian-12", "pkg:npm/shown@2.0.0",
                            "pkg:pypi/kept@1"]


def test_symlinks_resolve_inside_the_image_never_on_the_host(tmp_path: Path) -> None:
    """Links climbing out (``../../../..``) and absolute links name the image's own paths, as under
    chroot: the host's files they would name outside the image are never read."""
    root = tmp_path / "l0"
    _file(root / "usr/share/base/os-release", "ID=debian\nVERSION_ID=12\n")
    _file(root / "etc/x", "")
    os.symlink("../../../../../usr/share/base/os-release", root / "etc/os-release")  # Debian: ../usr/lib/…
    (root / "var/lib").mkdir(parents=True)
    os.symlink("/srv/dpkg", root / "var/lib/dpkg")
    _file(root / "srv/dpkg/status", "Package: mine\nStatus: install ok installed\nVersion: 1\n")
    # apk's db dir: a link to an absolute host path that holds a real database on the host
    (root / "lib/apk").mkdir(parents=True)
    hostdb = _file(tmp_path / "host/lib/apk/db/installed", APK_INSTALLED)
    os.symlink(str(hostdb.parent), root / "lib/apk/db")
    pkgs = _packages(sbom_predicate([root], name="x"))
    assert sorted(pkgs) == ["pkg:deb/debian/mine@1?distro=debian-12"]
    view = UnionView([root])
    assert view.lookup("/var/lib/dpkg/status").path == "/srv/dpkg/status"
    assert view.lookup("/lib/apk/db/installed") is None  # the image has no such file, only the host


def test_symlink_loops_and_a_status_that_is_a_link_or_a_device(tmp_path: Path) -> None:
    root = tmp_path / "l0"
    (root / "var/lib").mkdir(parents=True)
    os.symlink("dpkg", root / "var/lib/dpkg")  # a loop
    (root / "lib/apk/db").mkdir(parents=True)
    os.symlink("/etc/shadow", root / "lib/apk/db/installed")  # dangling in the image
    os.symlink("/proc/self/environ", root / "etc-os")
    pred = sbom_predicate([root], name="x")
    assert [p["SPDXID"] for p in pred["packages"]] == ["SPDXRef-DocumentRoot-Image"]
    assert "comment" not in pred


def test_huge_files_are_left_out_with_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "l0"
    _debian(root)
    with open(root / "var/lib/dpkg/status", "ab") as f:
        f.truncate(pkgdb.DB_LIMIT + 1)  # sparse: a 64 MiB file costs nothing on disk
    _file(root / "n/node_modules/big/package.json", b"")
    os.truncate(root / "n/node_modules/big/package.json", pkgdb.META_LIMIT + 1)
    warned: list[str] = []
    pred = sbom_predicate([root], name="x", warn=warned.append)
    assert len(pred["packages"]) == 1
    assert sorted(warned) == ["sbom: /n/node_modules/big/package.json: larger than 4 MiB, left out",
                              "sbom: /var/lib/dpkg/status: larger than 32 MiB, left out"]


def test_many_package_files_stop_at_the_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pkgdb, "MAX_FILES", 50)
    mods = tmp_path / "l0/node_modules"
    for i in range(60):
        _file(mods / f"m{i:03d}/package.json", json.dumps({"name": f"m{i:03d}", "version": "1.0.0"}))
    warned: list[str] = []
    scan_pred = sbom_predicate([tmp_path / "l0"], name="x", warn=warned.append)
    assert len(scan_pred["packages"]) == 1 + 50
    assert warned == ["sbom: more than 50 npm package files: the rest left out"]


def test_a_database_of_too_many_packages_and_too_many_bytes_in_all(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pkgdb, "MAX_PACKAGES", 10)
    monkeypatch.setattr(pkgdb, "TOTAL_LIMIT", 4000)
    root = tmp_path / "l0"
    _file(root / "var/lib/dpkg/status",
          "".join(f"Package: p{i:02d}\nStatus: install ok installed\nVersion: 1\n\n" for i in range(12)))
    for i in range(3):  # ~1500 bytes each: the third passes the 4000 bytes
        _file(root / f"usr/lib/python3/dist-packages/m{i}-1.dist-info/METADATA",
              f"Name: m{i}\nVersion: 1\n\n" + "#" * 1500)
    warned: list[str] = []
    pred = sbom_predicate([root], name="x", warn=warned.append)
    assert sorted(p["name"] for p in pred["packages"][1:]) == ["m0", "m1"] + [f"p{i:02d}" for i in range(10)]
    assert warned == ["sbom: /var/lib/dpkg/status: more than 10 packages, the rest left out",
                      "sbom: more than 4000 bytes of package records: the rest left out"]


def test_a_directory_of_too_many_names_is_left_out_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Which names a bounded listing kept would depend on the filesystem's order: none is kept."""
    monkeypatch.setattr(unionview, "MAX_NAMES", 20)
    for i in range(25):
        _file(tmp_path / f"l0/wide/node_modules/m{i:02d}/package.json",
              json.dumps({"name": f"m{i:02d}", "version": "1"}))
    _file(tmp_path / "l0/narrow/node_modules/ok/package.json", json.dumps({"name": "ok", "version": "1"}))
    warned: list[str] = []
    pred = sbom_predicate([tmp_path / "l0"], name="x", warn=warned.append)
    assert [p["name"] for p in pred["packages"][1:]] == ["ok"]
    assert warned == ["sbom: /wide/node_modules: more than 20 entries, not looked at"]


def test_deep_trees_and_deeply_nested_node_modules_are_bounded(tmp_path: Path) -> None:
    root = tmp_path / "l0"
    deep = root
    for _ in range(pkgdb.WALK_DEPTH + 5):
        deep = deep / "d"
    _file(deep / "site-packages/x-1.dist-info/METADATA", "Name: x\nVersion: 1\n")
    nested = root / "app"
    for i in range(pkgdb.NPM_NESTING + 3):
        nested = nested / "node_modules" / f"p{i}"
        _file(nested / "package.json", json.dumps({"name": f"p{i}", "version": "1.0.0"}))
    warned: list[str] = []
    pred = sbom_predicate([root], name="x", warn=warned.append)
    names = sorted(p["name"] for p in pred["packages"][1:])
    assert names == sorted(f"p{i}" for i in range(pkgdb.NPM_NESTING))
    assert len(warned) == 2
    assert warned[0].startswith("sbom: /app/node_modules/p0/") and "nested deeper than 32" in warned[0]
    assert warned[1] == f"sbom: directories deeper than {pkgdb.WALK_DEPTH} levels not searched"


def test_hostile_package_json_and_metadata_do_not_raise(tmp_path: Path) -> None:
    mods = tmp_path / "l0/node_modules"
    _file(mods / "a/package.json", "[" * 100_000)  # recursion bomb
    _file(mods / "b/package.json", json.dumps({"name": "b\n\x1b[31m", "version": "1"}))
    _file(mods / "c/package.json", json.dumps({"name": "c", "version": {"x": 1}}))
    _file(mods / "d/package.json", b"\xff\xfe not utf-8")
    _file(mods / "e/package.json", json.dumps({"name": "e", "version": "1.0.0", "license": "x" * 5000}))
    site = tmp_path / "l0/usr/lib/python3/site-packages"
    _file(site / "f-1.dist-info/METADATA", "Name: f/../../etc\nVersion: 1\n")
    _file(site / "g-1.dist-info/METADATA", b"\x00" * 1000)
    os.mkfifo(mods / "h-fifo")
    _file(site / "link-1.dist-info/x", "")
    os.symlink("/etc/passwd", site / "link-1.dist-info/METADATA")
    warned: list[str] = []
    pred = sbom_predicate([tmp_path / "l0"], name="x", warn=warned.append)
    (e,) = pred["packages"][1:]
    assert e["name"] == "e" and e["licenseDeclared"].startswith("LicenseRef-xxxx") and len(e["licenseDeclared"]) < 100
    assert sorted(warned) == ["sbom: /node_modules: 4 malformed package.json file(s) skipped",
                              "sbom: /usr/lib/python3/site-packages: 2 malformed Python metadata file(s) skipped"]


def test_paths_with_escapes_and_undecodable_bytes_are_shown_printable(tmp_path: Path) -> None:
    evil = os.fsencode(tmp_path / "l0") + b"/\x1b[2J\xff/node_modules"
    os.makedirs(evil + b"/ok")
    _file(Path(os.fsdecode(evil + b"/ok/package.json")), json.dumps({"name": "ok", "version": "1.0.0"}))
    _file(Path(os.fsdecode(evil + b"/bad/package.json")), "{")
    warned: list[str] = []
    pred = sbom_predicate([tmp_path / "l0"], name="x", warn=warned.append)
    assert pred["packages"][1]["sourceInfo"].endswith(": /?[2J\\xff/node_modules/ok/package.json")
    assert warned == ["sbom: /?[2J\\xff/node_modules: 1 malformed package.json file(s) skipped"]
    json.dumps(pred, ensure_ascii=False).encode()  # no lone surrogates left to fail a UTF-8 writer


def test_a_layer_not_on_disk_is_an_error_not_an_empty_sbom(tmp_path: Path) -> None:
    _debian(tmp_path / "l0")
    with pytest.raises(ExportError, match="is not on disk"):
        sbom_predicate([tmp_path / "l0", tmp_path / "missing"], name="x")


@pytest.mark.parametrize("text, expected", [
    ("GPL-2+ or Artistic", "GPL-2.0-or-later OR Artistic-1.0-Perl"),
    ("(MIT OR Apache-2.0) AND BSD-3-Clause", "(MIT OR Apache-2.0) AND BSD-3-Clause"),
    ("Apache-2.0 WITH LLVM-exception", "Apache-2.0 WITH LLVM-exception"),
    ("mit", "MIT"),
    ("MIT License AND Python Software Foundation License", "MIT AND PSF-2.0"),
    ("GPL-2+ AND BSD-variant AND GPL-2", "GPL-2.0-or-later AND LicenseRef-BSD-variant AND GPL-2.0-only"),
    ("BSD License", "LicenseRef-BSD-License"),
    ("GPL version 2 or later", "LicenseRef-GPL-version-2-or-later"),
    ("", "NOASSERTION"),
])
def test_licence_texts_become_valid_spdx_expressions(text: str, expected: str) -> None:
    assert license_expression(text)[0] == expected
