"""Image references (Docker's rules) and the registry error, apart from the registry client so that
what only names images (a solve whose base images are all in the store) does not import httpx."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from backend.errors import BackendError
from backend.store.blobs import check_digest

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_NAME_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class RegistryError(BackendError):
    """A registry request failed; ``status`` is the HTTP status (0 for connection errors)."""

    def __init__(self, message: str, status: int = 0, code: str = ""):
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Reference:
    registry: str  # as written by the user: docker.io, ghcr.io, 127.0.0.1:5000
    repository: str  # library/busybox
    tag: str | None = None
    digest: str | None = None

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def short(self) -> str:
        """``busybox:nope`` style, for messages."""
        repo = self.repository.removeprefix("library/") if self.registry == DOCKER_HUB else self.repository
        return repo + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def with_digest(self, digest: str) -> "Reference":
        return Reference(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}" + (f":{self.tag}" if self.tag else "") + \
            (f"@{self.digest}" if self.digest else "")


def parse_reference(text: str) -> Reference:
    """Parse ``[registry/]repo[:tag][@digest]``; the tag defaults to ``latest`` unless a digest is given."""
    s = text.strip()
    if not s:
        raise RegistryError("empty image reference")
    digest = None
    if "@" in s:
        s, digest = s.split("@", 1)
        try:
            check_digest(digest)
        except Exception:
            raise RegistryError(f"bad digest in reference {text!r}: want sha256:<64 hex>") from None
    tag = None
    slash = s.rfind("/")
    colon = s.rfind(":")
    if colon > slash:
        s, tag = s[:colon], s[colon + 1:]
        if not _TAG_RE.match(tag):
            raise RegistryError(f"bad tag {tag!r} in reference {text!r}")
    first, _, rest = s.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, repo = first, rest
    else:
        registry, repo = DOCKER_HUB, s
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in repo:
        repo = "library/" + repo
    if not _NAME_RE.match(repo):
        hint = " (repository names must be lowercase)" if repo.lower() != repo else ""
        raise RegistryError(f"bad repository name {repo!r} in reference {text!r}{hint}")
    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry, repo, tag, digest)


def is_loopback_host(host: str) -> bool:
    h = host.rsplit(":", 1)[0] if not host.endswith("]") and host.count(":") == 1 else host
    if h.startswith("[") and "]" in h:
        h = h[1:h.index("]")]
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False
