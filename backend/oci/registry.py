"""OCI distribution client: resolve and pull images, push blobs, manifests and indexes.

References follow Docker's rules (``busybox`` = ``docker.io/library/busybox:latest``; a first
component with ``.``/``:`` or ``localhost`` is a registry). Plain HTTP is used only for loopback or hosts
named insecure. Auth: anonymous or credentialed bearer tokens from the ``WWW-Authenticate`` challenge,
or basic auth. Every manifest and blob is verified against its digest before it is used or stored.
Transient failures (a timeout, a connection reset or cut mid-reply, 429, 500/502/503/504) are retried a
bounded number of times; a failure that would only repeat (a name that does not resolve, no route, a
refused connection, a TLS error) is reported at once (``_transient``).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable
from urllib.parse import urljoin

from backend.oci.auth import Authenticator, Credentials, docker_config_path, parse_challenge
from backend.oci.layout import INDEX_TYPES, MANIFEST_TYPES, MT_DOCKER_LIST, MT_DOCKER_MANIFEST, MT_OCI_INDEX, \
    MT_OCI_MANIFEST, Platform, select_manifest, LayoutError
from backend.oci.reference import Reference, RegistryError, is_loopback_host, parse_reference
from backend.oci.transport import (TRANSIENT_STATUS, LazyTLSTransport, add_query, httpx, read_capped, retry_delay,
                                   transient)
from backend.store.blobs import BlobStore, DigestMismatch, check_digest

ACCEPT_MANIFEST = ", ".join((MT_OCI_INDEX, MT_OCI_MANIFEST, MT_DOCKER_LIST, MT_DOCKER_MANIFEST))
MAX_MANIFEST = 4 << 20  # what distribution accepts on push
MAX_CONFIG = 64 << 20


@dataclass(frozen=True)
class ResolvedImage:
    reference: Reference
    manifest_digest: str
    manifest: dict
    manifest_bytes: bytes
    media_type: str
    config_bytes: bytes
    config: dict
    index_digest: str | None = None  # the index/list the manifest was selected from, if any

    @property
    def layers(self) -> list[dict]:
        return list(self.manifest.get("layers", []))


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class RegistryClient:
    store: BlobStore | None = None
    auth: Authenticator = field(default_factory=Authenticator)
    insecure: Iterable[str] = ()
    timeout: float = 60.0
    retries: int = 4
    backoff: float = 0.25
    monolithic_max: int = 16 << 20  # blobs up to this size go in one PUT
    chunk_size: int = 8 << 20
    transport: httpx.BaseTransport | None = None
    _origins: dict[str, Reference] = field(default_factory=dict)  # blob digest -> repo it was pulled from

    def __post_init__(self) -> None:
        self.insecure = frozenset(self.insecure)
        self._http = httpx.Client(timeout=self.timeout, follow_redirects=True,
                                  transport=self.transport or LazyTLSTransport(), headers={"User-Agent": "irctl"})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------------
    def _base(self, ref: Reference) -> str:
        host = ref.api_host
        scheme = "http" if is_loopback_host(host) or host in self.insecure or ref.registry in self.insecure else "https"
        return f"{scheme}://{host}"

    def _request(self, method: str, ref: Reference, url: str, *, actions: str = "pull", what: str = "",
                 headers: dict | None = None, content: bytes | Callable[[], bytes] | None = None,
                 params: dict | None = None, stream: bool = False, ok: tuple[int, ...] = (200,),
                 extra_scopes: tuple[str, ...] = ()) -> httpx.Response:
        """One request with auth and bounded retries; returns a response whose status is in ``ok``."""
        if not url.startswith("http"):
            url = self._base(ref) + url
        scope = " ".join((f"repository:{ref.repository}:{actions}", *extra_scopes))
        host = ref.api_host
        attempt = 0
        authed_once = False
        while True:
            hdrs = dict(headers or {})
            auth = self.auth.cached_header(host, scope)
            if auth:
                hdrs["Authorization"] = auth
            body = content() if callable(content) else content
            try:
                req = self._http.build_request(method, url, headers=hdrs, content=body, params=params)
                resp = self._http.send(req, stream=stream)
            except httpx.TransportError as e:
                if not transient(e):
                    raise RegistryError(f"registry {ref.registry}: {type(e).__name__}: {e}") from None
                if attempt < self.retries:
                    attempt += 1
                    time.sleep(self.backoff * 2 ** (attempt - 1))
                    continue
                raise RegistryError(f"registry {ref.registry}: {type(e).__name__}: {e} "
                                    f"(after {attempt + 1} attempts)") from None
            if resp.status_code == 401 and not authed_once:
                challenge = resp.headers.get("WWW-Authenticate", "")
                resp.close()
                self.auth.forget(host, scope)
                self._authenticate(ref, challenge, scope)
                authed_once = True
                continue
            if resp.status_code in TRANSIENT_STATUS and attempt < self.retries:
                resp.close()
                attempt += 1
                delay = self.backoff * 2 ** (attempt - 1)
                time.sleep(retry_delay(resp.headers.get("Retry-After", ""), delay))
                continue
            if resp.status_code not in ok:
                raise self._error(resp, ref, what)
            return resp

    def _error(self, resp: httpx.Response, ref: Reference, what: str) -> RegistryError:
        try:
            resp.read()
            errs = resp.json().get("errors") or []
            code = errs[0].get("code", "") if errs else ""
            msg = "; ".join(e.get("message") or e.get("code", "") for e in errs) or resp.reason_phrase
        except Exception:
            code, msg = "", resp.reason_phrase or "error"
        finally:
            resp.close()
        st = resp.status_code
        hint = ""
        if st == 401:
            hint = f" (authentication required: add credentials to {docker_config_path()})"
        elif st == 403:
            hint = " (access denied)"
        subject = f"{what} for {ref.short}" if what else f"for {ref.short}"
        if what and msg.lower().startswith(what.split()[0].lower()):
            subject = f"for {ref.short}"
        return RegistryError(f"registry {ref.registry}: {st} {msg} {subject}{hint}".replace("  ", " "), st, code)

    def _authenticate(self, ref: Reference, challenge: str, scope: str) -> None:
        scheme, params = parse_challenge(challenge)
        creds: Credentials | None = self.auth.for_host(ref.registry)
        host = ref.api_host
        if scheme == "basic":
            if creds is None:
                raise RegistryError(f"registry {ref.registry}: 401 authentication required for {ref.short} "
                                    f"(no credentials in {docker_config_path()})", 401, "UNAUTHORIZED")
            self.auth.store(host, scope, creds.basic_header(), 3600)
            return
        if scheme != "bearer" or "realm" not in params:
            raise RegistryError(f"registry {ref.registry}: 401 with unsupported challenge {challenge!r} "
                                f"for {ref.short}", 401, "UNAUTHORIZED")
        q = [("service", params["service"])] if params.get("service") else []
        q += [("scope", s) for s in scope.split(" ")]
        hdrs = {"Authorization": creds.basic_header()} if creds else {}
        try:
            r = self._http.get(params["realm"], params=q, headers=hdrs)
        except httpx.TransportError as e:
            raise RegistryError(f"registry {ref.registry}: token server {params['realm']}: {e}") from None
        if r.status_code != 200:
            raise RegistryError(f"registry {ref.registry}: token server refused ({r.status_code}) for {ref.short}"
                                + ("" if creds else " (anonymous; add credentials to ~/.docker/config.json)"),
                                r.status_code, "UNAUTHORIZED")
        doc = r.json()
        token = doc.get("token") or doc.get("access_token")
        if not token:
            raise RegistryError(f"registry {ref.registry}: token server returned no token")
        self.auth.store(host, scope, f"Bearer {token}", float(doc.get("expires_in") or 60))

    # -- pull --------------------------------------------------------------------------------
    def get_manifest(self, ref: Reference, reference: str | None = None) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest or index; verified if fetched by digest."""
        reference = reference or ref.reference
        resp = self._request("GET", ref, f"/v2/{ref.repository}/manifests/{reference}",
                             headers={"Accept": ACCEPT_MANIFEST}, what="manifest", stream=True)
        data = read_capped(resp, MAX_MANIFEST, f"registry {ref.registry}: manifest for {ref.short}")
        digest = _sha256(data)
        if reference.startswith("sha256:") and digest != reference:
            raise RegistryError(f"registry {ref.registry}: manifest {reference} for {ref.short} "
                                f"hashes to {digest}; refusing it", resp.status_code, "DIGEST_INVALID")
        mt = resp.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            body = json.loads(data)
        except ValueError:
            raise RegistryError(f"registry {ref.registry}: manifest for {ref.short} is not JSON") from None
        if not isinstance(body, dict):
            raise RegistryError(f"registry {ref.registry}: manifest for {ref.short} is not a JSON object")
        mt = body.get("mediaType") or mt
        return data, mt, digest

    def resolve(self, ref: Reference | str, platform: Platform | None = None) -> ResolvedImage:
        """Manifest digest, manifest and config of ``ref`` for ``platform`` (default: the host's)."""
        ref = parse_reference(ref) if isinstance(ref, str) else ref
        platform = platform or Platform.host()
        data, mt, digest = self.get_manifest(ref)
        index_digest = None
        if mt in INDEX_TYPES or "manifests" in json.loads(data):
            index_digest = digest
            try:
                desc = select_manifest(json.loads(data), platform, f"registry {ref.registry}: {ref.short}")
            except LayoutError as e:
                raise RegistryError(str(e), 404, "MANIFEST_UNKNOWN") from None
            data, mt, digest = self.get_manifest(ref, desc["digest"])
        if mt not in MANIFEST_TYPES:
            raise RegistryError(f"registry {ref.registry}: {ref.short} has unsupported manifest type {mt!r}")
        manifest = json.loads(data)
        cdesc = manifest["config"]
        config_bytes = self.fetch_blob_bytes(ref, cdesc["digest"], cdesc.get("size"))
        if self.store is not None:
            self.store.write_bytes(config_bytes)
            self.store.write_bytes(data)
        return ResolvedImage(ref, digest, manifest, data, mt, config_bytes, json.loads(config_bytes), index_digest)

    def fetch_blob_bytes(self, ref: Reference, digest: str, size: int | None = None) -> bytes:
        """A small blob (config) in memory, verified."""
        if self.store is not None and self.store.has(digest):
            return self.store.read_bytes(digest)
        resp = self._request("GET", ref, f"/v2/{ref.repository}/blobs/{digest}", what="blob", stream=True)
        data = read_capped(resp, MAX_CONFIG, f"registry {ref.registry}: blob {digest} for {ref.short}")
        if _sha256(data) != digest or (size is not None and len(data) != size):
            raise RegistryError(f"registry {ref.registry}: blob {digest} for {ref.short} does not match its "
                                "digest; not stored", resp.status_code, "DIGEST_INVALID")
        return data

    def fetch_blob(self, ref: Reference | str, digest: str, size: int | None = None,
                   progress: Callable[[int], None] | None = None) -> str:
        """Download a blob into the store (skipped if present); verified, never stored if wrong.
        ``progress``: called with the byte count after each chunk (``backend.events.Meter``)."""
        ref = parse_reference(ref) if isinstance(ref, str) else ref
        if self.store is None:
            raise RegistryError("fetch_blob needs a BlobStore")
        check_digest(digest)
        if self.store.has(digest):
            return digest
        attempt = 0
        while True:
            resp = self._request("GET", ref, f"/v2/{ref.repository}/blobs/{digest}", what="blob", stream=True)
            try:
                with self.store.writer() as w:
                    for chunk in resp.iter_bytes(1 << 20):
                        w.write(chunk)
                        if progress is not None:
                            progress(w.size)
                        if size is not None and w.size > size:
                            break
                    try:
                        w.commit(digest, size)
                    except DigestMismatch as e:
                        raise RegistryError(f"registry {ref.registry}: blob {digest} for {ref.short}: {e}",
                                            resp.status_code, "DIGEST_INVALID") from None
                self._origins[digest] = ref
                return digest
            except (httpx.TransportError, httpx.StreamError) as e:
                if attempt >= self.retries:
                    raise RegistryError(f"registry {ref.registry}: blob {digest} for {ref.short}: {e}") from None
                attempt += 1
                time.sleep(self.backoff * 2 ** (attempt - 1))
            finally:
                resp.close()

    def pull(self, ref: Reference | str, platform: Platform | None = None) -> ResolvedImage:
        """Resolve and download config and every layer into the store."""
        img = self.resolve(ref, platform)
        for layer in img.layers:
            self.fetch_blob(img.reference, layer["digest"], layer.get("size"))
        return img

    # -- push --------------------------------------------------------------------------------
    def blob_exists(self, ref: Reference, digest: str) -> bool:
        resp = self._request("HEAD", ref, f"/v2/{ref.repository}/blobs/{digest}", actions="pull,push",
                             ok=(200, 404), what="blob")
        resp.close()
        return resp.status_code == 200

    def push_blob(self, ref: Reference | str, digest: str, *, mount_from: str | None = None) -> str:
        """Upload one blob from the store unless the registry has it; returns how: exists/mounted/uploaded."""
        ref = parse_reference(ref) if isinstance(ref, str) else ref
        if self.store is None:
            raise RegistryError("push_blob needs a BlobStore")
        if self.blob_exists(ref, digest):
            return "exists"
        origin = self._origins.get(digest)
        if mount_from is None and origin is not None and origin.registry == ref.registry \
                and origin.repository != ref.repository:
            mount_from = origin.repository
        uploads = f"/v2/{ref.repository}/blobs/uploads/"
        if mount_from and mount_from != ref.repository:
            resp = self._request("POST", ref, uploads, actions="pull,push", params={"mount": digest, "from": mount_from},
                                 ok=(201, 202), what="blob upload",
                                 extra_scopes=(f"repository:{mount_from}:pull",))
            resp.close()
            if resp.status_code == 201:
                self._origins.setdefault(digest, ref)
                return "mounted"
        else:
            resp = self._request("POST", ref, uploads, actions="pull,push", ok=(202,), what="blob upload")
            resp.close()
        location = urljoin(str(resp.url), resp.headers["Location"])
        size = self.store.size(digest)
        if size <= self.monolithic_max:
            self._request("PUT", ref, add_query(location, {"digest": digest}), actions="pull,push",
                          headers={"Content-Type": "application/octet-stream"},
                          content=lambda: self.store.read_bytes(digest), ok=(201,), what="blob upload").close()
            self._origins.setdefault(digest, ref)
            return "uploaded"
        with self.store.open(digest) as f:
            offset = 0
            while offset < size:
                f.seek(offset)
                chunk = f.read(self.chunk_size)
                end = offset + len(chunk) - 1
                r = self._request("PATCH", ref, location, actions="pull,push", content=chunk, ok=(202,),
                                  headers={"Content-Type": "application/octet-stream",
                                           "Content-Range": f"{offset}-{end}"},
                                  what="blob upload")
                r.close()
                location = urljoin(location, r.headers["Location"])
                offset = end + 1
        self._request("PUT", ref, add_query(location, {"digest": digest}), actions="pull,push", content=b"",
                      ok=(201,), what="blob upload").close()
        self._origins.setdefault(digest, ref)
        return "uploaded"

    def push_manifest(self, ref: Reference | str, data: bytes, media_type: str, *, tag: str | None = None) -> str:
        """PUT a manifest or index under ``tag`` (default: the ref's tag, else its digest); returns its digest."""
        ref = parse_reference(ref) if isinstance(ref, str) else ref
        digest = _sha256(data)
        target = tag or ref.tag or digest
        self._request("PUT", ref, f"/v2/{ref.repository}/manifests/{target}", actions="pull,push",
                      headers={"Content-Type": media_type}, content=data, ok=(201,), what="manifest").close()
        return digest

    def push_image(self, ref: Reference | str, manifest_bytes: bytes, media_type: str, *,
                   mount_from: dict[str, str] | None = None, tag: str | None = None) -> str:
        """Push config + layers named in the manifest (from the store), then the manifest itself."""
        ref = parse_reference(ref) if isinstance(ref, str) else ref
        manifest = json.loads(manifest_bytes)
        for d in [manifest["config"], *manifest.get("layers", [])]:
            self.push_blob(ref, d["digest"], mount_from=(mount_from or {}).get(d["digest"]))
        return self.push_manifest(ref, manifest_bytes, media_type, tag=tag)
