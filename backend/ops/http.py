"""The http source (and so ``ADD https://…``): one GET into a new layer, only to addresses the graph may reach.

Every hop is checked by :mod:`backend.ops.netcheck` before a byte is sent: the URL's host is resolved,
each address judged, and the connection made to the checked address (the request keeps the name in
``Host:`` and, for https, in SNI and certificate verification), so a name cannot resolve one way for
the check and another for the connect.  Redirects are followed here, at most ``MAX_REDIRECTS``, and
each target is checked the same way; a redirect to another scheme than http/https is refused.

Proxies: when the environment names one for the URL (``http_proxy``/``https_proxy``/``all_proxy``,
minus ``no_proxy``), the request goes through it by name, as curl and Docker do; the target is still
resolved and checked here first, but the proxy resolves it again itself (the user's proxy is trusted
to be the user's choice; a proxy that can reach the host's loopback is the user's to configure).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ir import ops as irops

from backend.errors import GrantError, SolveError
from backend.ops.netcheck import resolve

MAX_REDIRECTS = 10
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _proxy_for(url) -> str | None:
    import urllib.request  # lazy: ~15 ms (http.client, email); every solve imports this module, few fetch

    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass_environment(url.host, proxies):
        return None
    return proxy


def _verify():
    """CA certificates as httpx finds them with ``trust_env`` (``SSL_CERT_FILE``/``SSL_CERT_DIR``),
    which the client here turns off for the proxy variables it handles itself."""
    import ssl

    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    return True


def fetch(h: irops.HTTPSource, layer: Path, step, allow_private: bool) -> None:
    from backend.oci.transport import httpx, import_httpcore  # lazy: httpx costs ~80 ms; only an http source needs it

    import_httpcore()
    name = h.filename or (h.url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "index.html")
    if name in (".", ".."):  # validate refuses these as a filename; a URL path may still end so
        name = "index.html"
    dest = layer / name
    digest = hashlib.sha256()
    try:
        url = httpx.URL(h.url)
    except httpx.InvalidURL as e:
        raise SolveError(f"GET {h.url}: not a URL irctl can fetch: {e}") from None
    try:
        for _ in range(MAX_REDIRECTS + 1):
            if url.scheme not in _DEFAULT_PORTS:
                raise GrantError(f"GET {h.url}: redirected to {url}, which is not http or https")
            port = url.port or _DEFAULT_PORTS[url.scheme]
            checked = resolve(url.host, port, allow_private, f"GET {url}")
            proxy = _proxy_for(url)
            with httpx.Client(trust_env=False, proxy=proxy, timeout=60, follow_redirects=False, verify=_verify(),
                              headers={"User-Agent": "irctl"}) as client:
                if proxy:
                    request = client.build_request("GET", url)
                else:  # connect to the address that was checked; name in Host and SNI
                    request = client.build_request("GET", url.copy_with(host=checked.address),
                                                   headers={"Host": url.netloc.decode("ascii")},
                                                   extensions={"sni_hostname": url.host})
                resp = client.send(request, stream=True)
                try:
                    if resp.is_redirect:
                        location = resp.headers.get("location", "")
                        try:
                            url = url.join(location)
                        except httpx.InvalidURL as e:
                            raise SolveError(f"GET {h.url}: redirected to an invalid URL: {e}") from None
                        step.info(f"GET {h.url}: redirected to {url}")
                        continue
                    if resp.status_code != 200:
                        raise SolveError(f"GET {h.url}: HTTP {resp.status_code}")
                    with open(dest, "wb") as f:
                        for chunk in resp.iter_bytes(1 << 20):
                            digest.update(chunk)
                            f.write(chunk)
                    break
                finally:
                    resp.close()
        else:
            raise SolveError(f"GET {h.url}: more than {MAX_REDIRECTS} redirects")
    except httpx.HTTPError as e:
        raise SolveError(f"GET {h.url}: {e}") from None
    got = "sha256:" + digest.hexdigest()
    if h.checksum and got != h.checksum:
        raise SolveError(f"GET {h.url}: content is {got}, expected checksum {h.checksum}")
    os.chmod(dest, h.mode)
    os.utime(dest, (0, 0))
    step.info(f"downloaded {h.url} ({dest.stat().st_size} bytes, {got})")
