"""COPY and ADD values as BuildKit checks them: destination paths, ``--chmod``, ``--checksum``, and
which sources are git repositories, HTTP(S) URLs or local paths (``dispatchCopy``, ``gitutil``).

Problems are :class:`StageError` (a message only); the frontend that passed the value locates it.
"""

from __future__ import annotations

import posixpath
import re
from urllib.parse import urlsplit

from frontends.common.errors import StageError
from ir.normal import abs_path

_OCTAL = re.compile(r"^[0-7]+$")
_SYMBOLIC = re.compile(r"^[ugoa]*(?:[-+=](?:[rwxXst]*|[ugo]))+(?:,[ugoa]*(?:[-+=](?:[rwxXst]*|[ugo]))+)*$")
_SCP = re.compile(r"^[\w.\-]+@[\w.\-]+:")
_SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")


def dest_path(cwd: str, p: str) -> str:
    """BuildKit ``pathRelativeToWorkingDir``: absolute, cleaned, trailing ``/`` kept."""
    if p in (".", ""):
        p = "./"
    out = abs_path(posixpath.join(cwd, p))
    if (p.endswith("/") or p.endswith("/.")) and out != "/":
        out += "/"
    return out


def check_chmod(chmod: str) -> str:
    """A ``--chmod`` value, octal ones normalised to four digits."""
    if _OCTAL.match(chmod):
        mode = int(chmod, 8)
        if mode > 0o7777:
            raise StageError(f"invalid chmod parameter: '{chmod}'. it should be octal string and "
                             "between 0 and 07777")
        return f"{mode:04o}"
    if not _SYMBOLIC.match(chmod):
        raise StageError(f'invalid --chmod value "{chmod}": expected an octal mode such as 0755 or a '
                         "symbolic mode such as u+rwx,go+rx")
    return chmod


def check_checksum(checksum: str, sources: list[str]) -> None:
    """``ADD --checksum``: one HTTP(S) source and a sha256 digest."""
    if len(sources) != 1:
        raise StageError("checksum can't be specified for multiple sources")
    if not is_http(sources[0]):
        raise StageError("checksum can't be specified for non-HTTP(S) sources")
    if not _SHA256.match(checksum):
        raise StageError(f'unsupported checksum "{checksum}": only sha256:<64 hex digits> is supported')


def parse_git_ref(src: str) -> tuple[str, str, str] | None:
    """BuildKit ``gitutil.ParseGitRef``: (remote, ref, subdir), or None for a non-git source.

    ``git@host:path``, ``ssh://``, ``git://`` are always git; ``http(s)://`` only when the path
    ends in ``.git``.  ``#ref:subdir`` selects the ref and a sub-directory."""
    if src.startswith(("./", "../", "/")):
        return None
    url, _, fragment = src.partition("#")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("git", "ssh") or (not scheme and _SCP.match(url)):
        pass
    elif scheme in ("http", "https"):
        if not urlsplit(url).path.endswith(".git"):
            return None
    else:
        return None
    ref, _, subdir = fragment.partition(":")
    return url, ref, subdir.strip("/")


def is_http(src: str) -> bool:
    return src.startswith(("http://", "https://")) and parse_git_ref(src) is None


def url_filename(url: str) -> str:
    base = posixpath.basename(urlsplit(url).path)
    return base if base not in ("", ".", "/") else "__unnamed__"
