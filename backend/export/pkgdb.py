"""The packages an image's own package databases record: dpkg, apk, Python distributions, npm.

Read for ``--sbom`` (``backend.export.sbom``), through ``backend.fs.unionview`` (the merged view of
the layers, never the host). Everything here is the image's word, and the image is hostile: every
file read is bounded in size, every walk in depth and in names, and an entry that does not parse —
no name, no version, a name with characters its ecosystem does not allow, a package.json that is not
an object — is skipped and counted, one note per file, never an exception. What is too large or too
many is left out the same way, with a note saying so. Packages come back sorted, so the same image
gives the same list whatever order its directories list in.

Where each ecosystem keeps its records (as syft, BuildKit's default scanner, reads them):
dpkg ``/var/lib/dpkg/status`` (installed stanzas only) and ``/var/lib/dpkg/status.d/*`` (distroless
images, one package per file, no Status field); apk ``/lib/apk/db/installed``; Python ``*.dist-info/
METADATA`` and ``*.egg-info`` (``PKG-INFO``) directly in any ``site-packages``/``dist-packages``;
npm ``node_modules/[@scope/]NAME/package.json``, nested ``node_modules`` included.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Iterator

from backend.fs import unionview
from backend.fs.unionview import Found, TooLarge, UnionView

DB_LIMIT = 32 << 20  # a dpkg status or apk installed file (debian's is ~100 KB, a desktop's ~10 MB)
META_LIMIT = 4 << 20  # one METADATA / PKG-INFO / package.json / copyright file
MAX_FILES = 100_000  # package files read per ecosystem (a real image has a few thousand at most)
TOTAL_LIMIT = 256 << 20  # bytes read in one scan, all files together
MAX_PACKAGES = 100_000  # packages taken from one database file (Debian's whole archive is ~65,000)
WALK_DEPTH = 64  # directories below / searched for site-packages and node_modules
NPM_NESTING = 32  # node_modules inside node_modules
WALK_NAMES = 2_000_000  # names listed while searching the image

_DEB_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]*\Z")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+~:_-]*\Z")  # dpkg, apk and PEP 440 versions all fit
_PY_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?\Z")
_NPM_NAME = re.compile(r"(@[a-z0-9~][a-z0-9._~-]*/)?[a-z0-9~][a-z0-9._~-]*\Z", re.IGNORECASE)
_NPM_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+-]*\Z")
_WORD = re.compile(r"[A-Za-z0-9_.+-]+\Z")
_LICENSE_FIELD = re.compile(r"^License:[ \t]*(\S[^\n]*)", re.MULTILINE | re.IGNORECASE)
_MAX_FIELD = 1024  # a licence or other free text kept from an entry


@dataclass(frozen=True, order=True)
class Package:
    """One installed package as its database records it."""

    kind: str  # deb | apk | pypi | npm (the purl type)
    name: str
    version: str
    source: str  # the image path of the file that recorded it
    arch: str = ""
    license: str = ""  # the database's own words (a Debian copyright's License: names, joined by AND)
    upstream: str = ""  # dpkg Source / apk origin, when it differs from the name


@dataclass(frozen=True)
class Distro:
    """``/etc/os-release``'s ID and VERSION_ID: the purl namespace and ``distro=`` qualifier."""

    id: str = ""
    version_id: str = ""


@dataclass
class Scan:
    packages: list[Package] = field(default_factory=list)
    distro: Distro = Distro()
    notes: list[str] = field(default_factory=list)  # one line per file that had entries skipped or was left out


# ------------------------------------------------------------------------------------------ parsing

def _clean(value: str, limit: int = _MAX_FIELD) -> str:
    """Printable text of at most ``limit`` characters (control characters become spaces)."""
    text = "".join(c if c.isprintable() else " " for c in value[: limit * 2]).strip()
    return text[:limit]


_PARAGRAPH = re.compile(r"\n[ \t]*\n")
# the value's trailing blanks are stripped after the match: a lazy value before `[ \t]*$` retries the
# blanks at every position (quadratic in a line of a hostile status file)
_FIELD = re.compile(r"^(package|status|version|architecture|source):[ \t]*([^\n]*)$",
                    re.MULTILINE | re.IGNORECASE)
_STRAY = re.compile(r"^[^ \t\n:][^:\n]*$|^[^ \t\n:]+[ \t][^:\n]*:", re.MULTILINE)  # no colon, or a space in the key


def stanzas(text: str, limit: int) -> Iterator[dict[str, str] | None]:
    """The fields dpkg status paragraphs are read for (package, status, version, architecture, source;
    lower-cased names, first lines), at most ``limit`` paragraphs. deb822: ``Field: value`` lines,
    continuation lines starting with a space or tab, paragraphs separated by blank lines; a paragraph
    with a line that is neither yields None (malformed), and so does all that follows the ``limit``th.
    Regular expressions, not a loop over lines: a 32 MiB status file of one-line paragraphs takes a
    second, not ten."""
    for n, para in enumerate(_PARAGRAPH.split(text, maxsplit=limit)):
        if n >= limit:
            yield None
            return
        if not para.strip():
            continue
        if _STRAY.search(para) or para.lstrip("\n")[:1] in (" ", "\t"):
            yield None
            continue
        fields: dict[str, str] = {}
        for key, value in _FIELD.findall(para):
            fields.setdefault(key.lower(), value.rstrip(" \t"))
        yield fields


def dpkg_packages(text: str, source: str, *, need_status: bool = True) -> tuple[list[Package], int]:
    """The installed packages of a dpkg status file (``need_status``: a status.d file has no Status);
    at most ``MAX_PACKAGES`` + 1 (the caller says the rest were left out)."""
    out, bad = [], 0
    for st in stanzas(text, limit=4 * MAX_PACKAGES):
        if st is None:
            bad += 1
            continue
        if need_status and st.get("status", "").split()[-1:] != ["installed"]:
            if "package" not in st:
                bad += 1
            continue  # removed with its config files left, half-installed…: not in the image as a package
        name, version, arch = st.get("package", ""), st.get("version", ""), st.get("architecture", "")
        if not _DEB_NAME.match(name) or not _VERSION.match(version) or (arch and not _WORD.match(arch)):
            bad += 1
            continue
        upstream = st.get("source", "").split(" ")[0]
        out.append(Package("deb", name, version, source, arch=arch,
                           upstream=upstream if upstream != name and _DEB_NAME.match(upstream) else ""))
        if len(out) > MAX_PACKAGES:
            break
    return out, bad


_APK_FIELD = re.compile(r"^([PVALo]):([^\n]*)$", re.MULTILINE)


def apk_packages(text: str, source: str) -> tuple[list[Package], int]:
    """apk's installed database: ``X:value`` lines, one blank line between packages; at most
    ``MAX_PACKAGES`` + 1, and all past 4 × ``MAX_PACKAGES`` blocks counted as one malformed entry."""
    out, bad = [], 0
    blocks = text.split("\n\n", 4 * MAX_PACKAGES)
    if len(blocks) > 4 * MAX_PACKAGES:
        blocks, bad = blocks[:-1], 1
    for block in blocks:
        fields: dict[str, str] = {}
        for key, value in _APK_FIELD.findall(block):
            fields.setdefault(key, value)  # the first of each letter
        if not fields:
            bad += bool(block.strip())
            continue
        name, version, arch = fields.get("P", ""), fields.get("V", ""), fields.get("A", "")
        if not _DEB_NAME.match(name.lower()) or not _VERSION.match(version) or (arch and not _WORD.match(arch)):
            bad += 1
            continue
        origin = fields.get("o", "")
        out.append(Package("apk", name, version, source, arch=arch, license=_clean(fields.get("L", "")),
                           upstream=origin if origin != name and _DEB_NAME.match(origin.lower()) else ""))
        if len(out) > MAX_PACKAGES:
            break
    return out, bad


def python_package(text: str, source: str) -> Package | None:
    """A distribution's core metadata (METADATA / PKG-INFO): RFC 822 headers up to the first blank line."""
    headers: dict[str, str] = {}
    classifiers: list[str] = []
    for line in text.split("\n", 2000):
        if not line.strip():
            break
        if line[0] in " \t":
            continue  # a folded header's continuation: only short headers are used
        key, sep, value = line.partition(":")
        if not sep:
            return None
        key = key.strip().lower()
        if key == "classifier" and value.strip().startswith("License ::"):
            classifiers.append(value.strip().split(" :: ")[-1])
        headers.setdefault(key, value.strip())
    name, version = headers.get("name", ""), headers.get("version", "")
    if not _PY_NAME.match(name) or not _VERSION.match(version):
        return None
    lic = headers.get("license-expression", "")
    if not lic and headers.get("license", "") not in ("", "UNKNOWN") and len(headers["license"]) <= 100:
        lic = headers["license"]
    if not lic and classifiers:
        lic = " AND ".join(sorted(set(classifiers)))
    return Package("pypi", name, version, source, license=_clean(lic))


def npm_package(text: str, source: str) -> Package | None:
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    name, version = doc.get("name"), doc.get("version")
    if not isinstance(name, str) or not isinstance(version, str) or len(name) > 214 or len(version) > 256:
        return None
    if not _NPM_NAME.match(name) or not _NPM_VERSION.match(version):
        return None
    lic = doc.get("license")
    if isinstance(lic, dict):
        lic = lic.get("type")
    if lic is None and isinstance(doc.get("licenses"), list):
        kinds = [x.get("type") if isinstance(x, dict) else x for x in doc["licenses"][:16]]
        lic = " OR ".join(k for k in kinds if isinstance(k, str))
    return Package("npm", name, version, source, license=_clean(lic) if isinstance(lic, str) else "")


def copyright_licenses(text: str) -> str:
    """The licence names of a Debian copyright file (DEP-5 ``License:`` fields' first lines), sorted,
    joined by AND."""
    names: set[str] = set()
    for first in _LICENSE_FIELD.findall(text):
        # blanks made one first: `\s+or\s+` tried at each of a long run of them rescans it (quadratic)
        for part in re.split(r",| or | and ", " ".join(first.split())):
            if part.strip() and _WORD.match(part.strip()):
                names.add(part.strip())
    return " AND ".join(sorted(names)[:32])


def os_release(text: str) -> Distro:
    values = {}
    for line in text.splitlines()[:200]:
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip("'\"")
    did, ver = values.get("ID", "").lower(), values.get("VERSION_ID", "")
    return Distro(did if _WORD.match(did) else "", ver if _WORD.match(ver) else "")


# ------------------------------------------------------------------------------------------ reading

def shown(path: str) -> str:
    """An image path as the document and the warnings show it: undecodable bytes as ``\\xNN``, other
    unprintable characters (a name holding a terminal escape) as ``?``."""
    text = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else "?" for c in text)


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and not n & ((1 << 20) - 1) else f"{n} bytes"


class _Reader:
    """One scan of one image: reads through the view, keeps the notes."""

    def __init__(self, view: UnionView) -> None:
        self.view = view
        self.scan = Scan()
        self.files: dict[str, int] = {}  # ecosystem -> package files read
        self.skipped: dict[str, int] = {}  # what -> entries skipped (summed into one note each)
        self.names = 0
        self.read_total = 0

    def skip(self, what: str, n: int = 1) -> None:
        if n:
            self.skipped[what] = self.skipped.get(what, 0) + n

    def text(self, f: Found, limit: int) -> str | None:
        """A file's text (undecodable bytes replaced), or None with a note: too large, unreadable, or
        past the scan's ``TOTAL_LIMIT``."""
        if self.read_total + min(f.st.st_size, limit) > TOTAL_LIMIT:
            if self.read_total <= TOTAL_LIMIT:
                self.scan.notes.append(f"more than {_size(TOTAL_LIMIT)} of package records: the rest left out")
                self.read_total = TOTAL_LIMIT + 1
            return None
        self.read_total += min(f.st.st_size, limit)
        try:
            return self.view.read(f, limit).decode("utf-8", "replace")
        except TooLarge:
            self.scan.notes.append(f"{shown(f.path)}: larger than {_size(limit)}, left out")
        except OSError as e:
            self.scan.notes.append(f"{shown(f.path)}: unreadable ({e.strerror or e}), left out")
        return None

    def add(self, found: list[Package], bad: int, where: str) -> None:
        """One database file's packages (at most ``MAX_PACKAGES``) and its one note."""
        if len(found) > MAX_PACKAGES:
            self.scan.notes.append(f"{where}: more than {MAX_PACKAGES} packages, the rest left out")
            found = found[:MAX_PACKAGES]
        self.scan.packages.extend(found)
        if bad:
            self.scan.notes.append(f"{where}: {bad} malformed entr{'y' if bad == 1 else 'ies'} skipped")

    def budget(self, kind: str) -> bool:
        """Whether one more ``kind`` package file may be read."""
        n = self.files.get(kind, 0)
        if n == MAX_FILES:
            self.scan.notes.append(f"more than {MAX_FILES} {kind} package files: the rest left out")
        self.files[kind] = n + 1
        return n < MAX_FILES

    def listdir(self, d: Found, dirs_only: bool = False) -> list[str]:
        names = self.view.listdir(d, dirs_only=dirs_only)
        if names is None:
            self.scan.notes.append(f"{shown(d.path)}: more than {unionview.MAX_NAMES} entries, not looked at")
            return []
        self.names += len(names)
        return names

    # ---------------------------------------------------------------------------------- databases

    def file(self, path: str, limit: int) -> tuple[str, str] | None:
        """(resolved image path, text) of the regular file at ``path``, None when there is none."""
        f = self.view.lookup(path)
        text = self.text(f, limit) if f is not None and f.is_file else None
        return (shown(f.path), text) if f is not None and text is not None else None

    def distro(self) -> None:
        for path in ("/etc/os-release", "/usr/lib/os-release"):
            if (got := self.file(path, 1 << 16)) is not None:
                self.scan.distro = os_release(got[1])
                return

    def dpkg(self) -> None:
        if (got := self.file("/var/lib/dpkg/status", DB_LIMIT)) is not None:
            self.add(*dpkg_packages(got[1], got[0]), got[0])
        d = self.view.lookup("/var/lib/dpkg/status.d")
        if d is not None and d.is_dir:  # distroless: a file per package, no Status
            found, bad = [], 0
            for name in self.listdir(d):
                f = self.view.child(d, name)
                if f is None or not f.is_file or name.endswith(".md5sums") or not self.budget("deb"):
                    continue
                text = self.text(f, META_LIMIT)
                if text is not None:
                    more, b = dpkg_packages(text, shown(f.path), need_status=False)
                    found += more
                    bad += b
            self.add(found, bad, shown(d.path))
        self.deb_licenses()

    def deb_licenses(self) -> None:
        """Debian keeps licences out of the status file, in /usr/share/doc/NAME/copyright (DEP-5)."""
        with_lic = []
        for p in self.scan.packages:
            if p.kind != "deb":
                with_lic.append(p)
                continue
            got = self.file(f"/usr/share/doc/{p.name}/copyright", META_LIMIT)
            lic = copyright_licenses(got[1]) if got else ""
            with_lic.append(Package(p.kind, p.name, p.version, p.source, p.arch, lic, p.upstream))
        self.scan.packages = with_lic

    def apk(self) -> None:
        if (got := self.file("/lib/apk/db/installed", DB_LIMIT)) is not None:
            self.add(*apk_packages(got[1], got[0]), got[0])

    # ---------------------------------------------------------------------------------- the search

    def search(self) -> None:
        """Every directory of the image (links not followed, bounded) for site-packages and node_modules."""
        stack: list[tuple[Found, int]] = [(self.view.root(), 0)]
        deep = False
        while stack:
            d, depth = stack.pop()
            if self.names >= WALK_NAMES:
                self.scan.notes.append(f"more than {WALK_NAMES} names in the image: the search stopped early")
                return
            for name in reversed(self.listdir(d, dirs_only=True)):
                child = self.view.child(d, name)
                if child is None or not child.is_dir:
                    continue
                if name in ("site-packages", "dist-packages"):
                    self.python(child)
                elif name == "node_modules":
                    self.npm(child, 0)
                elif depth + 1 < WALK_DEPTH:
                    stack.append((child, depth + 1))
                else:
                    deep = True
        if deep:
            self.scan.notes.append(f"directories deeper than {WALK_DEPTH} levels not searched")

    def python(self, d: Found) -> None:
        bad = 0
        for name in self.listdir(d):
            if not name.endswith((".dist-info", ".egg-info")):
                continue
            entry = self.view.child(d, name)
            if entry is None:
                continue
            if entry.is_dir:
                entry = self.view.child(entry, "METADATA" if name.endswith(".dist-info") else "PKG-INFO")
            if entry is None or not entry.is_file or not self.budget("pypi"):
                continue
            text = self.text(entry, META_LIMIT)
            if text is None:
                continue
            pkg = python_package(text, shown(entry.path))
            if pkg is None:
                bad += 1
            else:
                self.scan.packages.append(pkg)
        if bad:
            self.scan.notes.append(f"{shown(d.path)}: {bad} malformed Python metadata file(s) skipped")

    def npm(self, d: Found, nesting: int) -> None:
        if nesting >= NPM_NESTING:
            self.scan.notes.append(f"{shown(d.path)}: node_modules nested deeper than {NPM_NESTING}, not searched")
            return
        bad = 0
        dirs: list[Found] = []
        for name in self.listdir(d):
            if name.startswith("."):
                continue
            entry = self.view.child(d, name)
            if entry is None or not entry.is_dir:
                continue
            if name.startswith("@"):
                for sub in self.listdir(entry):
                    pkg_dir = self.view.child(entry, sub)
                    if pkg_dir is not None and pkg_dir.is_dir:
                        dirs.append(pkg_dir)
            else:
                dirs.append(entry)
        for pkg_dir in dirs:
            f = self.view.child(pkg_dir, "package.json")
            if f is not None and f.is_file and self.budget("npm"):
                text = self.text(f, META_LIMIT)
                pkg = npm_package(text, shown(f.path)) if text is not None else None
                if pkg is None and text is not None:
                    bad += 1
                elif pkg is not None:
                    self.scan.packages.append(pkg)
            nested = self.view.child(pkg_dir, "node_modules")
            if nested is not None and nested.is_dir:
                self.npm(nested, nesting + 1)
        if bad:
            self.scan.notes.append(f"{shown(d.path)}: {bad} malformed package.json file(s) skipped")


def scan_image(view: UnionView) -> Scan:
    """The packages every database of the image records, sorted; notes for what was skipped."""
    reader = _Reader(view)
    reader.distro()
    reader.dpkg()
    reader.apk()
    reader.search()
    scan = reader.scan
    scan.packages = sorted(set(scan.packages))
    return scan
