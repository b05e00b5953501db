"""``--load``: hand a built image to the local container engine, as ``docker load`` would.

Which engine, in order (``find_engine``): the Docker engine ``DOCKER_HOST`` names (``unix://PATH`` or
``tcp://HOST:PORT``: its API, ``POST /images/load``; ``ssh://`` or TLS settings: the ``docker`` CLI, which
knows how); without ``DOCKER_HOST``, Docker's default socket if it answers; else podman's containers-storage
(``podman load``), else skopeo into containers-storage (buildah's store). A ``DOCKER_HOST`` the user set is
never passed over for another engine: an image silently landing elsewhere would be worse than an error.

The archive (``backend.export.docker.DockerArchive``) is streamed to the engine as it is read from the
store, never held in memory. Everything the engine answers is input: read up to a bound, parsed
defensively, and quoted as one line (the CLI escapes control characters when it prints it).

Rootless: irctl then runs as uid 0 of its own user namespace (``backend.userns``), whose mapping is the one
podman makes for the same user (0 → the user, 1… → their subordinate ids). podman is told the namespace is
already set up (``_CONTAINERS_USERNS_CONFIGURED``, as ``podman unshare`` does), so it uses the user's own
store under ``~/.local/share/containers`` with the same file owners it would have written itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from backend.errors import ExportError
from backend.export.docker import DockerArchive
from backend.userns import ENV_MARK, in_user_namespace, read_id_map

DEFAULT_SOCKET = "/var/run/docker.sock"
MAX_ANSWER = 1 << 20  # bytes of an engine's answer (a load's JSON stream, a CLI's output) read at most
MAX_QUOTED = 300  # characters of an engine's message quoted in an error
CONNECT_TIMEOUT = 5.0
LOAD_TIMEOUT = 600.0  # seconds without progress before a load is given up


class LoadError(ExportError):
    """No engine could take the image, or the one chosen refused it."""


@dataclass(frozen=True)
class Engine:
    """Where an image is loaded: ``kind`` is ``docker-api``, ``docker-cli``, ``podman`` or ``skopeo``;
    ``where`` says it for the user; ``address``: the API's socket path or ``http://HOST:PORT``."""

    kind: str
    where: str
    address: str = ""
    env: tuple[tuple[str, str], ...] = ()  # set for the engine's process (rootless podman/skopeo)


def find_engine(environ: Mapping[str, str] = os.environ) -> Engine:
    """The engine ``--load`` talks to (see the module docstring), or a ``LoadError`` saying, for each
    candidate, why not."""
    host = environ.get("DOCKER_HOST", "").strip()
    if host:
        return _docker_host(host, environ)
    why = []
    if os.path.exists(DEFAULT_SOCKET):
        problem = _unix_problem(DEFAULT_SOCKET)
        if problem is None:
            return Engine("docker-api", f"Docker at unix://{DEFAULT_SOCKET}", DEFAULT_SOCKET)
        why.append(f"Docker at unix://{DEFAULT_SOCKET}: {problem}")
    else:
        why.append(f"no Docker ({DEFAULT_SOCKET} absent, DOCKER_HOST unset)")
    storage = _containers_storage()
    if shutil.which("podman", path=environ.get("PATH")):
        return Engine("podman", f"podman (containers-storage, {storage[0]})", env=storage[1])
    if shutil.which("skopeo", path=environ.get("PATH")):
        return Engine("skopeo", f"containers-storage (skopeo, {storage[0]})", env=storage[1])
    why.append("no podman or skopeo on PATH")
    raise LoadError("no container engine to load into: " + "; ".join(why))


def _docker_host(host: str, environ: Mapping[str, str]) -> Engine:
    scheme, sep, rest = host.partition("://")
    cli = shutil.which("docker", path=environ.get("PATH"))
    if not sep:
        raise LoadError(f"DOCKER_HOST={_quote(host)}: expected unix:///PATH, tcp://HOST:PORT or ssh://HOST")
    if scheme == "unix" and rest.startswith("/"):
        problem = _unix_problem(rest)
        if problem is not None:
            raise LoadError(f"Docker at {_quote(host)} (DOCKER_HOST): {problem}")
        return Engine("docker-api", f"Docker at {_quote(host)}", rest)
    if scheme == "tcp" and rest:
        if environ.get("DOCKER_TLS_VERIFY") or environ.get("DOCKER_CERT_PATH"):
            if cli is None:
                raise LoadError(f"Docker at {_quote(host)} wants TLS (DOCKER_TLS_VERIFY/DOCKER_CERT_PATH), which "
                                "irctl leaves to the docker CLI: none on PATH")
            return Engine("docker-cli", f"Docker at {_quote(host)} (docker load)")
        hostport = rest.rstrip("/")
        if not re.search(r":[0-9]+$", hostport):
            hostport += ":2375"  # Docker's plain-HTTP port, as the docker CLI assumes
        return Engine("docker-api", f"Docker at {_quote(host)}", f"http://{hostport}")
    if scheme == "ssh" and rest:
        if cli is None:
            raise LoadError(f"Docker at {_quote(host)}: ssh is left to the docker CLI: none on PATH")
        return Engine("docker-cli", f"Docker at {_quote(host)} (docker load)")
    raise LoadError(f"DOCKER_HOST={_quote(host)}: unsupported (unix:///PATH, tcp://HOST:PORT or ssh://HOST)")


def _unix_problem(path: str) -> str | None:
    """Why the socket at ``path`` cannot be used (None: something accepts connections there)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(CONNECT_TIMEOUT)
        try:
            s.connect(path)
        except PermissionError:
            return (f"permission denied for uid {_outer_uid()} (whoever can use a Docker socket is root on "
                    "its host: it is for root and the docker group)")
        except FileNotFoundError:
            return "no such socket"
        except OSError as e:
            return e.strerror or str(e)
    return None


def _outer_uid() -> int:
    """Our uid outside irctl's rootless user namespace (the uid the kernel checks a socket's mode against)."""
    if in_user_namespace():
        for inside, outside, _ in read_id_map("uid"):
            if inside == 0:
                return outside
    return os.getuid()


def _containers_storage() -> tuple[str, tuple[tuple[str, str], ...]]:
    """Whose containers-storage podman/skopeo will use, and what they must be told for it: inside irctl's
    rootless namespace, that it is set up already and which user it stands for (see the module docstring)."""
    if not os.environ.get(ENV_MARK):  # not irctl's namespace (root in a container is root to its podman)
        return ("root" if os.geteuid() == 0 else f"uid {os.geteuid()}"), ()
    ids = {kind: next((o for i, o, _ in read_id_map(kind) if i == 0), None) for kind in ("uid", "gid")}
    if ids["uid"] is None or ids["gid"] is None:
        raise LoadError("rootless: this user namespace maps no id to 0; podman cannot tell whose store to use")
    return f"rootless, uid {ids['uid']}", (("_CONTAINERS_USERNS_CONFIGURED", "done"),
                                          ("_CONTAINERS_ROOTLESS_UID", str(ids["uid"])),
                                          ("_CONTAINERS_ROOTLESS_GID", str(ids["gid"])))


def load(engine: Engine, archive: DockerArchive, names: list[str], *, scratch: Path) -> None:
    """Send ``archive`` to ``engine``; a ``LoadError`` quotes the engine's refusal. ``scratch``: a private
    directory for the one engine that cannot read a stream (skopeo seeks in its archive)."""
    if engine.kind == "docker-api":
        _load_api(engine, archive)
    elif engine.kind == "docker-cli":
        _run(engine, ["docker", "load", "-q"], archive.chunks())
    elif engine.kind == "podman":
        _run(engine, ["podman", "load", "-q"], archive.chunks())
    elif engine.kind == "skopeo":
        if not names:
            raise LoadError("skopeo needs a name to store an image under: add -t NAME")
        with tempfile.NamedTemporaryFile(dir=scratch, prefix="load-", suffix=".tar") as f:
            for chunk in archive.chunks():
                f.write(chunk)
            f.flush()
            for name in names:  # the first copy stores the layers; the others only name them
                _run(engine, ["skopeo", "copy", "-q", f"docker-archive:{f.name}", f"containers-storage:{name}"], ())
    else:
        raise LoadError(f"unknown engine kind {engine.kind!r}")


def _load_api(engine: Engine, archive: DockerArchive) -> None:
    from backend.oci.transport import httpx, import_httpcore  # lazy: httpx costs ~80 ms; podman needs none

    import_httpcore()
    unix = not engine.address.startswith("http://")
    transport = httpx.HTTPTransport(uds=engine.address) if unix else httpx.HTTPTransport()
    base = "http://docker" if unix else engine.address
    timeout = httpx.Timeout(LOAD_TIMEOUT, connect=CONNECT_TIMEOUT)
    try:
        with httpx.Client(transport=transport, base_url=base, timeout=timeout, trust_env=False) as client:
            with client.stream("POST", "/images/load", params={"quiet": "1"}, content=archive.chunks(),
                               headers={"Content-Type": "application/x-tar"}) as r:
                answer = _bounded(r.iter_bytes(), engine.where)
                status = r.status_code
    except httpx.HTTPError as e:
        raise LoadError(f"{engine.where}: {_quote(str(e) or type(e).__name__)}") from None
    if status != 200:
        raise LoadError(f"{engine.where} refused the image (HTTP {status}): {_quote(_message(answer))}")
    loaded = False
    for line in answer.splitlines():  # a JSON stream: {"stream": "Loaded image…"} lines, or {"error": …}
        event = _json(line)
        if not isinstance(event, dict):
            continue
        if event.get("error"):
            raise LoadError(f"{engine.where} refused the image: {_quote(str(event['error']))}")
        loaded = loaded or str(event.get("stream", "")).startswith("Loaded image")
    if not loaded:
        raise LoadError(f"{engine.where} answered without saying it loaded the image: "
                        f"{_quote(answer[:MAX_QUOTED * 4].decode('utf-8', 'replace'))}")


def _run(engine: Engine, argv: list[str], chunks: Iterable[bytes]) -> None:
    """Run an engine's CLI with ``chunks`` on its stdin; its output goes to a file (read up to a bound)
    so a chatty tool can never stall us on a full pipe."""
    env = {**os.environ, **dict(engine.env)}
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=out, env=env)
        except OSError as e:
            raise LoadError(f"{engine.where}: cannot run {argv[0]}: {e.strerror}") from None
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it stopped reading: its exit status says why
            with proc.stdin:
                for chunk in chunks:
                    proc.stdin.write(chunk)
        code = proc.wait()
        out.seek(0)
        said = out.read(MAX_ANSWER).decode("utf-8", "replace")
    if code != 0:
        last = [line for line in said.splitlines() if line.strip()][-1:] or ["(no message)"]
        raise LoadError(f"{engine.where}: {argv[0]} {argv[1]} failed (exit {code}): {_quote(last[0])}")


def _bounded(chunks: Iterator[bytes], where: str) -> bytes:
    """At most ``MAX_ANSWER`` bytes, within ``LOAD_TIMEOUT`` in all: the read timeout alone lets an
    engine that trickles a byte now and then hold us for ever."""
    data = bytearray()
    deadline = time.monotonic() + LOAD_TIMEOUT
    for chunk in chunks:
        data += chunk[:MAX_ANSWER - len(data)]
        if len(data) >= MAX_ANSWER:
            break
        if time.monotonic() > deadline:
            raise LoadError(f"{where}: answered for too long (over {LOAD_TIMEOUT:.0f}s) without finishing")
    return bytes(data)


def _message(answer: bytes) -> str:
    """An API error body's ``message`` (Docker answers ``{"message": …}``), else its text."""
    body = _json(answer)
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return answer.decode("utf-8", "replace")


def _json(data: bytes) -> object:
    """``data`` parsed, or None: an engine's answer may be anything (``[[[…`` exhausts the parser's stack)."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def _quote(text: str) -> str:
    """An engine's (or the environment's) words as one bounded line; control characters are escaped
    by the CLI when it prints."""
    one = " ".join(text.split())
    return one if len(one) <= MAX_QUOTED else one[:MAX_QUOTED] + "…"
