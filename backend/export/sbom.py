"""``--sbom``: an SPDX 2.3 document of an image's packages, the predicate of BuildKit's SBOM attestation.

BuildKit runs a scanner image (buildkit-syft-scanner) over the built root filesystem and attaches
its SPDX JSON as an in-toto statement with predicate type ``https://spdx.dev/Document``. irctl reads
the same records syft reads — the package databases (``backend.export.pkgdb``) through the layers
(``backend.fs.unionview``) — and writes the same shape: one package per installed package, with
name, ``versionInfo``, a purl (``externalRefs``), the declared licence where the database gives one,
and ``sourceInfo`` naming the file that recorded it. What it does not do, and syft does: guess
packages from binaries (Go build info, Java jars, RPM databases), CPEs, per-file checksums.

The document is a function of the layers' contents and of ``name`` and ``created`` only: packages
sorted, SPDX ids and the document namespace derived from the contents, and ``creationInfo.created``
is ``created`` (SOURCE_DATE_EPOCH when the build has one, else the image's creation time as the
caller decides) or, when None, the epoch, 1970-01-01T00:00:00Z. So the same image gives the same
bytes, and the attestation does not change an otherwise reproducible image index.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import time
from importlib import resources
from typing import Callable, Sequence
from urllib.parse import quote

from backend.errors import ExportError
from backend.export.pkgdb import Package, Scan, scan_image
from backend.fs.unionview import UnionView

PREDICATE_TYPE = "https://spdx.dev/Document"  # in-toto predicate type of an SPDX document (BuildKit's)
SPDX_VERSION = "SPDX-2.3"
TOOL = "irctl"

_ROOT_ID = "SPDXRef-DocumentRoot-Image"
_YEAR_10000 = 253402300800  # SPDX's created is YYYY-MM-DDThh:mm:ssZ
_SOURCE_INFO = {
    "deb": "acquired package info from the dpkg database: {}",
    "apk": "acquired package info from the apk database: {}",
    "pypi": "acquired package info from installed Python package metadata: {}",
    "npm": "acquired package info from an installed node module manifest: {}",
}
# Licence names packages write that are not SPDX ids (Debian DEP-5, old PyPI/npm spellings)
_LICENSE_IDS = {
    "gpl-1": "GPL-1.0-only", "gpl-1+": "GPL-1.0-or-later", "gpl-2": "GPL-2.0-only", "gpl-2+": "GPL-2.0-or-later",
    "gpl-3": "GPL-3.0-only", "gpl-3+": "GPL-3.0-or-later", "lgpl-2": "LGPL-2.0-only", "lgpl-2+": "LGPL-2.0-or-later",
    "lgpl-2.1": "LGPL-2.1-only", "lgpl-2.1+": "LGPL-2.1-or-later", "lgpl-3": "LGPL-3.0-only",
    "lgpl-3+": "LGPL-3.0-or-later", "agpl-3": "AGPL-3.0-only", "agpl-3+": "AGPL-3.0-or-later",
    "gfdl-1.2": "GFDL-1.2-only", "gfdl-1.2+": "GFDL-1.2-or-later", "gfdl-1.3": "GFDL-1.3-only",
    "gfdl-1.3+": "GFDL-1.3-or-later", "bsd-2-clause": "BSD-2-Clause", "bsd-3-clause": "BSD-3-Clause",
    "bsd-4-clause": "BSD-4-Clause", "expat": "MIT", "mit": "MIT", "isc": "ISC", "zlib": "Zlib",
    "apache-2.0": "Apache-2.0", "apache-2": "Apache-2.0", "mpl-1.1": "MPL-1.1", "mpl-2.0": "MPL-2.0",
    "artistic": "Artistic-1.0-Perl", "artistic-2.0": "Artistic-2.0", "psf-2": "PSF-2.0", "psf": "PSF-2.0",
    "python-2.0": "Python-2.0", "cc0-1.0": "CC0-1.0", "cc0": "CC0-1.0", "curl": "curl", "openssl": "OpenSSL",
    "unlicense": "Unlicense", "0bsd": "0BSD", "bsl-1.0": "BSL-1.0", "x11": "X11", "ftl": "FTL",
}
# Whole licence texts Python distributions write (trove classifiers' last part, License: headers)
_LICENSE_TEXTS = {
    "mit license": "MIT", "the mit license": "MIT", "isc license (iscl)": "ISC", "isc license": "ISC",
    "python software foundation license": "PSF-2.0", "apache license 2.0": "Apache-2.0",
    "apache license, version 2.0": "Apache-2.0", "apache license version 2.0": "Apache-2.0",
    "apache 2.0": "Apache-2.0", "apache 2": "Apache-2.0", "new bsd license": "BSD-3-Clause",
    "3-clause bsd license": "BSD-3-Clause", "2-clause bsd license": "BSD-2-Clause",
    "gnu general public license v2 (gplv2)": "GPL-2.0-only", "gnu general public license v3 (gplv3)": "GPL-3.0-only",
    "gnu general public license v2 or later (gplv2+)": "GPL-2.0-or-later",
    "gnu general public license v3 or later (gplv3+)": "GPL-3.0-or-later",
    "gnu lesser general public license v2 (lgplv2)": "LGPL-2.0-only",
    "gnu lesser general public license v3 (lgplv3)": "LGPL-3.0-only",
    "gnu lesser general public license v2 or later (lgplv2+)": "LGPL-2.0-or-later",
    "gnu lesser general public license v3 or later (lgplv3+)": "LGPL-3.0-or-later",
    "mozilla public license 2.0 (mpl 2.0)": "MPL-2.0", "the unlicense (unlicense)": "Unlicense",
    "zope public license": "ZPL-2.1", "academic free license (afl)": "AFL-3.0",
}
_ID_CHARS = re.compile(r"[^A-Za-z0-9.-]+")


# ------------------------------------------------------------------------------------------ purls

def _part(s: str) -> str:
    return quote(s, safe=":")


def purl(p: Package, scan: Scan) -> str:
    """The package URL (purl-spec): type, namespace, name, version, qualifiers sorted by key."""
    quals: dict[str, str] = {}
    if p.kind in ("deb", "apk"):
        distro = scan.distro
        namespace = distro.id or ("debian" if p.kind == "deb" else "alpine")
        if p.arch:
            quals["arch"] = p.arch
        if distro.id:
            quals["distro"] = f"{distro.id}-{distro.version_id}" if distro.version_id else distro.id
        if p.upstream:
            quals["upstream"] = p.upstream
        head = f"pkg:{p.kind}/{_part(namespace)}/{_part(p.name)}"
    elif p.kind == "pypi":
        head = "pkg:pypi/" + _part(re.sub(r"[-_.]+", "-", p.name).lower())
    else:  # npm: a scope is the namespace, its @ percent-encoded
        scope, _, name = p.name.rpartition("/")
        head = "pkg:npm/" + (_part(scope) + "/" if scope else "") + _part(name)
    text = f"{head}@{_part(p.version)}"
    if quals:
        text += "?" + "&".join(f"{k}={quote(v, safe=':/')}" for k, v in sorted(quals.items()))
    return text


# --------------------------------------------------------------------------------------- licences

_EXCEPTIONS = ("Autoconf-exception-2.0", "Autoconf-exception-3.0", "Bison-exception-2.2", "Classpath-exception-2.0",
               "Font-exception-2.0", "GCC-exception-2.0", "GCC-exception-3.1", "LLVM-exception",
               "Linux-syscall-note", "OpenSSL-exception", "Qt-LGPL-exception-1.1", "openvpn-openssl-exception")


@functools.cache
def _spdx_ids() -> dict[str, str]:
    """The SPDX License List's identifiers by lower case (matching is case-insensitive, SPDX 2.3 annex D)."""
    data = json.loads(resources.files("backend.export").joinpath("spdx_license_ids.json").read_text())
    return {i.lower(): i for i in [*data["ids"], *_EXCEPTIONS]}


def _ref(text: str) -> str:
    return "LicenseRef-" + (_ID_CHARS.sub("-", text).strip("-")[:64] or "unknown")


def _license_id(token: str) -> str | None:
    low = token.lower()
    if low in _LICENSE_IDS:
        return _LICENSE_IDS[low]
    ids = _spdx_ids()
    if low in ids:
        return ids[low]
    if low.endswith("+") and low[:-1] in ids:
        return ids[low[:-1]] + "+"
    return None


def license_expression(text: str) -> tuple[str, dict[str, str]]:
    """(an SPDX licence expression for a database's licence text, the ``LicenseRef-``s it uses with
    the words each stands for). Known names become SPDX ids, ``and``/``or``/``with`` operators; an
    unknown name in such a list becomes its own ``LicenseRef-``; a text that is not a list of names
    (``GPL version 2 or later``) becomes one ``LicenseRef-`` for the whole of it. Always a valid
    expression: a consumer checking it against the SPDX list finds no unknown id."""
    if not text:
        return "NOASSERTION", {}
    if text.strip().lower() in _LICENSE_TEXTS:
        return _LICENSE_TEXTS[text.strip().lower()], {}
    if " AND " in text and "(" not in text:  # names joined by AND (copyright files, classifiers): each alone
        parts = [license_expression(part) for part in text.split(" AND ")]
        if all(" " not in expr for expr, _ in parts):
            refs = {k: v for _, used in parts for k, v in used.items()}
            return " AND ".join(dict.fromkeys(expr for expr, _ in parts)), refs
    tokens = re.findall(r"\(|\)|[^\s(),;/]+|[,;/]", text)
    out: list[str] = []
    refs: dict[str, str] = {}
    for tok in tokens:
        low = tok.lower()
        if tok in ("(", ")"):
            out.append(tok)
        elif tok in (",", ";") or low in ("and", "&"):
            out.append("AND")
        elif tok == "/" or low == "or":
            out.append("OR")
        elif low == "with":
            out.append("WITH")
        elif out and out[-1] == "WITH":
            if tok.lower() not in {e.lower() for e in _EXCEPTIONS}:
                return _ref(text), {_ref(text): text}
            out.append(_spdx_ids()[tok.lower()])
        elif (known := _license_id(tok)) is not None:
            out.append(known)
        elif re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.+_-]*", tok):
            refs[_ref(tok)] = tok  # a name, just not one on the SPDX list (Debian's BSD-variant, …)
            out.append(_ref(tok))
        else:
            return _ref(text), {_ref(text): text}
    if not out or not _balanced(out):
        return _ref(text), {_ref(text): text}
    if "(" not in out and "OR" not in out and "WITH" not in out:  # a plain AND list: each name once
        names = list(dict.fromkeys(t for t in out if t != "AND"))
        return " AND ".join(names), refs
    return " ".join(out).replace("( ", "(").replace(" )", ")"), refs


def _balanced(tokens: list[str]) -> bool:
    """Operators between operands, parentheses matched."""
    depth, want_operand = 0, True
    for tok in tokens:
        if tok == "(":
            if not want_operand:
                return False
            depth += 1
        elif tok == ")":
            if want_operand or depth == 0:
                return False
            depth -= 1
        elif tok in ("AND", "OR", "WITH"):
            if want_operand:
                return False
            want_operand = True
        else:
            if not want_operand:
                return False
            want_operand = False
    return depth == 0 and not want_operand


# --------------------------------------------------------------------------------------- document

def _spdx_id(p: Package, locator: str) -> str:
    digest = hashlib.sha256(f"{locator}\0{p.source}\0{p.license}".encode()).hexdigest()[:16]
    return f"SPDXRef-Package-{p.kind}-{_ID_CHARS.sub('-', p.name).strip('-')[:64]}-{digest}"


def spdx_document(scan: Scan, *, name: str, created: int | None = None) -> dict:
    """The SPDX 2.3 JSON document (as a dict) of a scan."""
    packages, refs, relationships = [], {}, []
    root_name = name or "image"
    for p in scan.packages:
        locator = purl(p, scan)
        declared, used = license_expression(p.license)
        refs.update(used)
        entry = {
            "SPDXID": _spdx_id(p, locator),
            "name": p.name,
            "versionInfo": p.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "sourceInfo": _SOURCE_INFO[p.kind].format(p.source),
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": declared,
            "copyrightText": "NOASSERTION",
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                              "referenceLocator": locator}],
        }
        if p.license and declared != p.license:
            entry["licenseComments"] = f"recorded as: {p.license}"
        packages.append(entry)
        relationships.append({"spdxElementId": _ROOT_ID, "relatedSpdxElement": entry["SPDXID"],
                              "relationshipType": "CONTAINS"})
    root = {"SPDXID": _ROOT_ID, "name": root_name, "downloadLocation": "NOASSERTION", "filesAnalyzed": False,
            "licenseConcluded": "NOASSERTION", "licenseDeclared": "NOASSERTION", "copyrightText": "NOASSERTION",
            "primaryPackagePurpose": "CONTAINER"}
    relationships.insert(0, {"spdxElementId": "SPDXRef-DOCUMENT", "relatedSpdxElement": _ROOT_ID,
                             "relationshipType": "DESCRIBES"})
    when = created if created is not None and 0 < created < _YEAR_10000 else 0
    body = {
        "spdxVersion": SPDX_VERSION,
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": root_name,
        "creationInfo": {
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)),
            "creators": [f"Tool: {TOOL}"],
        },
        "packages": [root, *packages],
        "relationships": relationships,
    }
    if refs:
        body["hasExtractedLicensingInfos"] = [{"licenseId": ref, "extractedText": text, "name": text}
                                              for ref, text in sorted(refs.items())]
    if scan.notes:
        body["comment"] = "; ".join(scan.notes)
    content = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    body["documentNamespace"] = f"https://irctl.invalid/spdx/{quote(root_name, safe='')}-{content}"
    return body


def sbom_predicate(layers: Sequence[str | os.PathLike[str]], *, name: str, created: int | None = None,
                   warn: Callable[[str], None] | None = None) -> dict:
    """The SPDX document (the in-toto predicate, type ``PREDICATE_TYPE``) of the image whose layers are
    ``layers`` (overlay upper dirs, bottom first: ``Snapshot.layers``). ``name`` names the image in
    the document; ``created`` (seconds since the epoch) is its creation time, None: the epoch.
    ``warn`` gets one line per database file that had entries skipped or was left out (the same
    lines are the document's ``comment``). ``ExportError`` when a layer is not a directory on disk."""
    for layer in layers:  # a layer not on disk would read as empty: an SBOM missing packages, silently
        if not os.path.isdir(layer):
            raise ExportError(f"sbom: layer {os.fspath(layer)} is not on disk (the solve did not materialize it)")
    scan = scan_image(UnionView(layers))
    if warn is not None:
        for note in scan.notes:
            warn(f"sbom: {note}")
    return spdx_document(scan, name=name, created=created)
