"""Registry client against the real loopback docker-registry, cross-checked with skopeo."""

from __future__ import annotations

import base64
import http.server
import json
import os
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from backend.oci.auth import Authenticator, Credentials, load_docker_config, parse_challenge
from backend.store.blobs import BlobStore
from backend.export.image import ExportOptions, ImageSpec
from backend.export.registry import export_registry
from backend.oci.layout import OCILayout, Platform
from backend.oci.reference import Reference, RegistryError, parse_reference
from backend.oci.registry import RegistryClient
from tests.support.registry import registry, start_registry, stop_registry  # noqa: F401
from tests.support.tools import run

pytestmark = pytest.mark.registry


# -- references, credentials, challenges --------------------------------------------------------

@pytest.mark.parametrize("text,want", [
    ("busybox", Reference("docker.io", "library/busybox", "latest")),
    ("busybox:1.36", Reference("docker.io", "library/busybox", "1.36")),
    ("docker.io/busybox", Reference("docker.io", "library/busybox", "latest")),
    ("index.docker.io/library/busybox", Reference("docker.io", "library/busybox", "latest")),
    ("user/app", Reference("docker.io", "user/app", "latest")),
    ("localhost/app", Reference("localhost", "app", "latest")),
    ("localhost:5000/a/b:c", Reference("localhost:5000", "a/b", "c")),
    ("127.0.0.1:5000/busybox", Reference("127.0.0.1:5000", "busybox", "latest")),
    ("ghcr.io/o/r@sha256:" + "a" * 64, Reference("ghcr.io", "o/r", None, "sha256:" + "a" * 64)),
    ("ghcr.io/o/r:t@sha256:" + "a" * 64, Reference("ghcr.io", "o/r", "t", "sha256:" + "a" * 64)),
    ("[::1]:5000/x", Reference("[::1]:5000", "x", "latest")),
])
def test_parse_reference(text: str, want: Reference) -> None:
    assert parse_reference(text) == want


@pytest.mark.parametrize("text,msg", [("", "empty"), ("Busybox", "must be lowercase"),
                                      ("busybox@sha256:12", "bad digest"), ("a:b/c:", "bad tag")])
def test_bad_references(text: str, msg: str) -> None:
    with pytest.raises(RegistryError, match=msg):
        parse_reference(text)


def test_docker_config_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:secret:with:colons").decode()},
        "ghcr.io": {"username": "gh", "password": "pat"},
        "http://127.0.0.1:5000": {"auth": base64.b64encode(b"a:b").decode()},
    }}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    creds = load_docker_config()
    assert creds == {"docker.io": Credentials("hub", "secret:with:colons"), "ghcr.io": Credentials("gh", "pat"),
                     "127.0.0.1:5000": Credentials("a", "b")}
    assert Authenticator().for_host("registry-1.docker.io") == creds["docker.io"]


def test_parse_challenge() -> None:
    assert parse_challenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                           'scope="repository:library/busybox:pull"') == (
        "bearer", {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                   "scope": "repository:library/busybox:pull"})
    assert parse_challenge('Basic realm="Registry Realm"') == ("basic", {"realm": "Registry Realm"})


# -- against the real registry ---------------------------------------------------------------------

def _spec(tmp_path: Path, name: str, arch: str = "amd64", size: int = 4096) -> ImageSpec:
    d = tmp_path / f"layer-{name}-{arch}"
    (d / "data").mkdir(parents=True)
    (d / "data" / "blob").write_bytes(os.urandom(size))
    (d / "data" / "name").write_text(name)
    return ImageSpec(layers=[d], config={"Cmd": ["/bin/sh"], "Env": [f"NAME={name}"]},
                     history=[{"created_by": f"make {name}"}], platform={"os": "linux", "architecture": arch})


def _skopeo_inspect(addr: str, name: str, *extra: str) -> dict:
    return json.loads(run("skopeo", "inspect", "--tls-verify=false", *extra, f"docker://{addr}/{name}"))


def test_push_seen_by_skopeo_then_pull_verified(tmp_path: Path, registry: str) -> None:
    store = BlobStore(tmp_path / "store")
    with RegistryClient(store) as client:
        digest, [img] = export_registry(_spec(tmp_path, "app"), store, [f"{registry}/team/app:1",
                                                                         f"{registry}/team/app:latest"], client)
        assert client.push_blob(f"{registry}/team/app", img.layers[0].digest) == "exists"
    assert digest == img.digest
    info = _skopeo_inspect(registry, "team/app:1")
    assert info["Digest"] == img.digest and "NAME=app" in info["Env"]
    assert _skopeo_inspect(registry, "team/app:latest")["Digest"] == img.digest
    fresh = BlobStore(tmp_path / "fresh")
    with RegistryClient(fresh) as client:
        got = client.pull(f"{registry}/team/app:1")
    assert got.manifest_digest == img.digest and got.manifest_bytes == img.manifest_bytes
    assert got.config == img.config
    for d in [img.manifest["config"]["digest"], img.layers[0].digest]:
        fresh.verify(d)
    with RegistryClient(fresh) as client:  # pinned by digest
        assert client.resolve(f"{registry}/team/app@{img.digest}").config_bytes == img.config_bytes


def test_skopeo_copy_of_our_layout_and_pull(tmp_path: Path, registry: str, busybox_layout: Path) -> None:
    run("skopeo", "copy", "--dest-tls-verify=false", f"oci:{busybox_layout}:latest",
        f"docker://{registry}/busybox:latest")
    with OCILayout(busybox_layout) as layout:
        want = layout.resolve("latest")
    store = BlobStore(tmp_path / "store")
    with RegistryClient(store) as client:
        got = client.pull(f"{registry}/busybox")
        assert got.manifest_digest == want.descriptor["digest"]
        for layer in got.layers:
            store.verify(layer["digest"])
        # cross-repo mount: the client knows where it pulled the layer from
        assert client.push_blob(f"{registry}/mirror/busybox", got.layers[0]["digest"]) == "mounted"
        assert client.push_blob(f"{registry}/mirror/busybox", got.layers[0]["digest"]) == "exists"
        assert client.push_blob(f"{registry}/mirror2", got.manifest["config"]["digest"],
                                mount_from="busybox") == "mounted"
        with pytest.raises(RegistryError) as e:
            client.resolve(f"{registry}/busybox:nope")
        assert str(e.value) == f"registry {registry}: 404 manifest unknown for busybox:nope"
        assert e.value.status == 404 and e.value.code == "MANIFEST_UNKNOWN"
        with pytest.raises(RegistryError, match=f"registry {registry}: 404 .*unknown.* for nothere:latest"):
            client.resolve(f"{registry}/nothere")


def test_chunked_upload_of_large_blob(tmp_path: Path, registry: str) -> None:
    store = BlobStore(tmp_path / "store")
    with RegistryClient(store, monolithic_max=1024, chunk_size=100_000) as client:
        digest, [img] = export_registry(_spec(tmp_path, "big", size=350_000), store, [f"{registry}/big:1"], client,
                                        options=ExportOptions(compression="none"))
    assert img.layers[0].size > 350_000
    fresh = BlobStore(tmp_path / "fresh")
    with RegistryClient(fresh) as client:
        client.pull(f"{registry}/big:1")
    fresh.verify(img.layers[0].digest)


def test_multi_platform_index_and_docker_media_types(tmp_path: Path, registry: str) -> None:
    store = BlobStore(tmp_path / "store")
    specs = [_spec(tmp_path, "multi", "amd64"), _spec(tmp_path, "multi", "arm64")]
    with RegistryClient(store) as client:
        top, imgs = export_registry(specs, store, [f"{registry}/multi:1"], client,
                                    options=ExportOptions(media_types="docker"))
        raw = json.loads(run("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{registry}/multi:1"))
        assert raw["mediaType"] == "application/vnd.docker.distribution.manifest.list.v2+json"
        assert [m["digest"] for m in raw["manifests"]] == [i.digest for i in imgs]
        arm = client.resolve(f"{registry}/multi:1", Platform.parse("linux/arm64"))
        assert arm.manifest_digest == imgs[1].digest and arm.index_digest == top
        assert arm.media_type == "application/vnd.docker.distribution.manifest.v2+json"
        with pytest.raises(RegistryError, match="no image for platform linux/s390x"):
            client.resolve(f"{registry}/multi:1", Platform.parse("linux/s390x"))
    info = _skopeo_inspect(registry, "multi:1", "--override-arch", "arm64")
    assert info["Architecture"] == "arm64"


def test_blob_with_wrong_digest_rejected_and_not_stored(tmp_path: Path) -> None:
    proc, addr = start_registry(tmp_path / "reg")
    try:
        store = BlobStore(tmp_path / "store")
        with RegistryClient(store) as client:
            _, [img] = export_registry(_spec(tmp_path, "victim"), store, [f"{addr}/victim:1"], client)
        layer = img.layers[0].digest
        data = tmp_path / "reg" / "storage" / "docker" / "registry" / "v2" / "blobs" / "sha256" / layer[7:9] / \
            layer[7:] / "data"
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0xFF  # same size, different bytes
        data.write_bytes(bytes(raw))
        fresh = BlobStore(tmp_path / "fresh")
        with RegistryClient(fresh) as client:
            with pytest.raises(RegistryError, match=f"blob {layer} for victim:1: content hashes to sha256:"):
                client.pull(f"{addr}/victim:1")
        assert not fresh.has(layer)
        assert os.listdir(tmp_path / "fresh" / "tmp") == []
    finally:
        stop_registry(proc)


class _Counting(httpx.BaseTransport):
    """The client's real transport, counting the requests that reach it."""

    def __init__(self) -> None:
        from backend.oci.transport import LazyTLSTransport as _LazyTLSTransport

        self.inner = _LazyTLSTransport()
        self.requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_connection_resets_retried_a_bounded_number_of_times(tmp_path: Path) -> None:
    import socket
    import struct

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]

    def reset_every_connection() -> None:  # accept, then close with RST (SO_LINGER 0)
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.recv(1)
            conn.close()

    threading.Thread(target=reset_every_connection, daemon=True).start()
    counting = _Counting()
    try:
        with RegistryClient(BlobStore(tmp_path), retries=2, backoff=0.01, transport=counting) as client:
            with pytest.raises(RegistryError, match=r"registry 127.0.0.1:\d+: \w+Error.*after 3 attempts"):
                client.resolve(f"127.0.0.1:{port}/x:1")
    finally:
        server.close()
    assert counting.requests == 3


@pytest.mark.parametrize("host", ["no-such-registry.invalid", "127.0.0.1:{refused}"])
def test_unresolvable_or_refusing_registry_is_not_retried(tmp_path: Path, host: str) -> None:
    """A name that does not resolve (or no network to resolve it) and a refused connection fail the
    same way again: one attempt, no backoff (a mistyped stage name is an image on docker.io)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        refused = s.getsockname()[1]  # closed again: connection refused
    counting = _Counting()
    with RegistryClient(BlobStore(tmp_path), retries=4, backoff=5.0, transport=counting,
                        insecure=("no-such-registry.invalid",)) as client:
        with pytest.raises(RegistryError, match=r"ConnectError: .*(not known|resolution|refused)") as e:
            client.resolve(f"{host.format(refused=refused)}/x:1")
    assert "attempts" not in str(e.value)
    assert counting.requests == 1


# -- bearer tokens and transient errors, with a token-checking front on the real registry ---------

class _Front(http.server.ThreadingHTTPServer):
    upstream = ""
    fail_next = 0
    retry_after = ""  # a Retry-After header sent with the 503s
    blob_length: int | None = None  # a Content-Length to claim for blobs instead of the true one
    token_requests: list[tuple[str, str]] = []


class _FrontHandler(http.server.BaseHTTPRequestHandler):
    server: _Front

    def log_message(self, *a: object) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, length: int | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        host = f"127.0.0.1:{self.server.server_address[1]}"
        if self.path.startswith("/token"):
            self.server.token_requests.append((self.path, self.headers.get("Authorization", "")))
            if self.headers.get("Authorization") != "Basic " + base64.b64encode(b"alice:s3cret").decode():
                return self._send(401)
            return self._send(200, json.dumps({"token": "tok-123", "expires_in": 300}).encode())
        if self.headers.get("Authorization") != "Bearer tok-123":
            return self._send(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}', {
                "WWW-Authenticate": f'Bearer realm="http://{host}/token",service="front"'})
        if self.server.fail_next > 0:
            self.server.fail_next -= 1
            return self._send(503, b"busy", {"Retry-After": self.server.retry_after} if self.server.retry_after else None)
        r = httpx.get(f"http://{self.server.upstream}{self.path}", headers={"Accept": self.headers.get("Accept", "")})
        lie = self.server.blob_length if "/blobs/" in self.path else None
        try:
            self._send(r.status_code, r.content, {"Content-Type": r.headers.get("Content-Type", "application/json")}, lie)
        except OSError:  # the client hung up on a lie
            pass


@pytest.fixture
def front(registry: str) -> Iterator[_Front]:  # noqa: F811
    srv = _Front(("127.0.0.1", 0), _FrontHandler)
    srv.upstream = registry
    srv.token_requests = []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize("length", [10**18, 10])
def test_lying_content_length_is_an_error_and_progress_keeps_the_descriptor_size(
        tmp_path: Path, registry: str, front: _Front, length: int) -> None:
    """Progress totals come from the manifest's descriptor (verified with the digest), never from a
    Content-Length: a registry claiming 10**18 bytes, or 10, fails the pull and nothing is stored."""
    from backend.events import Meter, Recorder

    store = BlobStore(tmp_path / "store")
    with RegistryClient(store) as client:
        _, [img] = export_registry(_spec(tmp_path, "liar", size=300_000), store, [f"{registry}/liar:1"], client)
    layer = img.layers[0]
    front_addr = f"127.0.0.1:{front.server_address[1]}"
    front.blob_length = length
    fresh = BlobStore(tmp_path / "fresh")
    rec = Recorder()
    meter = Meter(rec, ("sha256:" + "0" * 64, "FROM liar", ""), layer.digest, layer.size, interval=0.0)
    client = RegistryClient(fresh, auth=Authenticator({front_addr: Credentials("alice", "s3cret")}),
                            backoff=0.01, retries=1)
    meter(0)  # as backend.oci.pull does before a fetch
    with client, pytest.raises(RegistryError, match=f"blob {layer.digest} for liar:1"):
        client.fetch_blob(f"{front_addr}/liar:1", layer.digest, layer.size, progress=meter)
    assert not fresh.has(layer.digest)
    assert {e.total for e in rec.of("progress")} == {layer.size}
    assert all(e.current <= layer.size for e in rec.of("progress"))


def test_bearer_token_with_credentials_and_503_retry(tmp_path: Path, registry: str, front: _Front) -> None:
    server, front_addr = front, f"127.0.0.1:{front.server_address[1]}"
    store = BlobStore(tmp_path / "store")
    with RegistryClient(store) as client:
        _, [img] = export_registry(_spec(tmp_path, "secure"), store, [f"{registry}/secure:1"], client)
    fresh = BlobStore(tmp_path / "fresh")
    anon = RegistryClient(fresh, auth=Authenticator({}))
    with anon, pytest.raises(RegistryError, match="token server refused .401. for secure:1 .anonymous"):
        anon.resolve(f"{front_addr}/secure:1")
    client = RegistryClient(fresh, auth=Authenticator({front_addr: Credentials("alice", "s3cret")}), backoff=0.01)
    with client:
        server.fail_next = 2
        got = client.pull(f"{front_addr}/secure:1")
    assert got.manifest_digest == img.digest
    fresh.verify(img.layers[0].digest)
    scopes = [p for p, _ in server.token_requests]
    assert any("scope=repository%3Asecure%3Apull" in p and "service=front" in p for p in scopes)
    assert len(server.token_requests) == 2  # one refused anonymous attempt, then one token reused for all


@pytest.mark.parametrize("retry_after", ["\u00b2", "99999999999999999999", "-1", "Wed, 21 Oct 2015 07:28:00 GMT", "0"])
def test_hostile_retry_after_is_bounded_and_never_a_traceback(
        tmp_path: Path, registry: str, front: _Front, retry_after: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Retry-After is the registry's word: a superscript digit (``isdigit`` but not ``int``), a
    huge or negative number or an HTTP date must neither crash the pull nor stall it."""
    import backend.oci.transport

    monkeypatch.setattr(backend.oci.transport, "MAX_RETRY_AFTER", 2.0)
    store = BlobStore(tmp_path / "store")
    with RegistryClient(store) as client:
        export_registry(_spec(tmp_path, "busy"), store, [f"{registry}/busy:1"], client)
    front_addr = f"127.0.0.1:{front.server_address[1]}"
    client = RegistryClient(BlobStore(tmp_path / "fresh"), auth=Authenticator({front_addr: Credentials("alice", "s3cret")}),
                            backoff=0.01)
    front.fail_next, front.retry_after = 1, retry_after
    t0 = time.monotonic()
    with client:
        client.resolve(f"{front_addr}/busy:1")
    assert time.monotonic() - t0 < 4


def test_insecure_is_only_for_loopback() -> None:
    c = RegistryClient(None, insecure=["myreg.internal:5000"])
    assert c._base(parse_reference("127.0.0.1:5000/x")) == "http://127.0.0.1:5000"
    assert c._base(parse_reference("localhost:5000/x")) == "http://localhost:5000"
    assert c._base(parse_reference("[::1]:5000/x")) == "http://[::1]:5000"
    assert c._base(parse_reference("myreg.internal:5000/x")) == "http://myreg.internal:5000"
    assert c._base(parse_reference("ghcr.io/x")) == "https://ghcr.io"
    assert c._base(parse_reference("busybox")) == "https://registry-1.docker.io"
    c.close()


def test_skopeo_copy_of_our_exported_layout(tmp_path: Path, registry: str) -> None:
    from backend.export.oci import export_oci

    store = BlobStore(tmp_path / "store")
    spec = _spec(tmp_path, "ours")
    _, [img] = export_oci(spec, store, tmp_path / "layout", tar=False, ref_name="v1",
                          options=ExportOptions(source_date_epoch=1_700_000_000))
    run("skopeo", "copy", "--dest-tls-verify=false", f"oci:{tmp_path / 'layout'}:v1", f"docker://{registry}/ours:v1")
    assert _skopeo_inspect(registry, "ours:v1")["Digest"] == img.digest
    fresh = BlobStore(tmp_path / "fresh")
    with RegistryClient(fresh) as client:
        got = client.pull(f"{registry}/ours:v1")
    assert got.manifest_digest == img.digest and got.config_bytes == img.config_bytes
    fresh.verify(img.layers[0].digest)
