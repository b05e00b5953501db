"""Registry credentials and auth challenges.

Credentials come from ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json`` (``auths`` entries with
a base64 ``auth`` or ``username``/``password``; credential helpers are not supported). Challenges are
parsed from ``WWW-Authenticate``: ``Bearer realm=...,service=...,scope=...`` (Docker Hub, GHCR, ...) or
``Basic``. Tokens are cached per registry and scope until shortly before they expire.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from backend.errors import BackendError

DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


class AuthError(BackendError):
    """Credentials are malformed or a token could not be obtained."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def basic_header(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def _host_key(key: str) -> str:
    key = re.sub(r"^[a-z]+://", "", key.strip()).split("/", 1)[0]
    return "docker.io" if key in ("index.docker.io", "registry-1.docker.io") else key


def docker_config_path() -> Path:
    """Where docker (and so irctl) reads credentials: ``$DOCKER_CONFIG/config.json`` when set."""
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def load_docker_config(path: str | os.PathLike[str] | None = None) -> dict[str, Credentials]:
    """Registry host -> credentials from a docker ``config.json`` (missing file: no credentials)."""
    p = Path(path) if path is not None else docker_config_path()
    if not p.is_file():
        return {}
    try:
        doc = json.loads(p.read_text())
    except ValueError as e:
        raise AuthError(f"{p}: not valid JSON: {e}") from None
    out: dict[str, Credentials] = {}
    for key, entry in (doc.get("auths") or {}).items():
        if not isinstance(entry, dict):
            continue
        user, pw = entry.get("username"), entry.get("password")
        if entry.get("auth"):
            try:
                user, _, pw = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise AuthError(f"{p}: auths[{key!r}].auth is not base64 of user:password") from None
        if user:
            out[_host_key(key)] = Credentials(user, pw or "")
    return out


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="https://x",service="y",scope="a b"`` -> ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
              for m in re.finditer(r'([A-Za-z_]+)=(?:"([^"]*)"|([^,\s]*))', rest)}
    return scheme.lower(), params


class Authenticator:
    """Holds credentials and cached bearer tokens; used by the registry client."""

    def __init__(self, credentials: dict[str, Credentials] | None = None):
        self.credentials = load_docker_config() if credentials is None else dict(credentials)
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def for_host(self, host: str) -> Credentials | None:
        return self.credentials.get(_host_key(host))

    def cached_header(self, host: str, scope: str) -> str | None:
        with self._lock:
            hit = self._tokens.get((host, scope))
        if hit and hit[1] > time.monotonic():
            return hit[0]
        return None

    def store(self, host: str, scope: str, header: str, expires_in: float) -> None:
        with self._lock:
            self._tokens[(host, scope)] = (header, time.monotonic() + max(expires_in - 10, 1))

    def forget(self, host: str, scope: str) -> None:
        with self._lock:
            self._tokens.pop((host, scope), None)
