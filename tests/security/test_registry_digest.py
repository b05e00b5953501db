"""A registry that returns a blob whose bytes do not match its digest (here: a small proxy in
front of the real loopback registry that flips one byte) must be rejected with a clear error, and
the bad bytes must never enter the cache: the next build, through an honest registry, succeeds."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.cli import irctl
from tests.security.conftest import entry, make_layout, push_layout, tar_bytes, write_ctx

pytestmark = pytest.mark.e2e


class CorruptingProxy:
    """Forwards to ``upstream``; while ``corrupt`` holds a digest, a GET naming it gets one byte flipped."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.corrupt: str | None = None
        self.served_bad = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self, method: str) -> None:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                with httpx.Client(follow_redirects=True) as c:
                    r = c.request(method, f"http://{proxy.upstream}{self.path}", headers=headers)
                body = r.content
                if method == "GET" and proxy.corrupt and self.path.endswith(proxy.corrupt) and body:
                    body = body[:-1] + bytes([body[-1] ^ 0xFF])
                    proxy.served_bad += 1
                self.send_response(r.status_code)
                for k, v in r.headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(body)

            def do_GET(self):
                self._forward("GET")

            def do_HEAD(self):
                self._forward("HEAD")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.addr = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _blobs_match_their_names(cache: Path) -> list[str]:
    bad = []
    for p in (cache / "blobs" / "sha256").glob("*"):
        if p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest() != p.name:
            bad.append(p.name)
    return bad


@pytest.mark.parametrize("which", ["layer", "config", "manifest"])
def test_corrupted_blob_is_rejected_and_never_cached(tmp_path, registry, which):
    layout = make_layout(tmp_path / "layout", [tar_bytes([entry("hello.txt", data=b"hello\n")])])
    index = json.loads((layout / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"]
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_digest.split(":")[1]).read_text())
    target = {"layer": manifest["layers"][-1]["digest"], "config": manifest["config"]["digest"],
              "manifest": manifest_digest}[which]
    name = f"digest/{which}-{uuid.uuid4().hex[:8]}"
    push_layout(layout, f"{registry}/{name}:v1")
    cache = {"IRCTL_CACHE_DIR": str(tmp_path / "cache")}
    with CorruptingProxy(registry) as proxy:
        ref = f"{proxy.addr}/{name}@{manifest_digest}"
        ctx = write_ctx(tmp_path / "ctx", {"Dockerfile": f"FROM {ref}\nRUN cat /hello.txt > /copy\n"})
        out = tmp_path / "out"
        proxy.corrupt = target
        bad = irctl("build", ctx, "--progress", "plain", "--output", f"type=local,dest={out}", env=cache)
        assert proxy.served_bad >= 1, "the corrupted blob was never requested"
        assert bad.code != 0, bad.stderr
        assert "Traceback" not in bad.stderr, bad.stderr
        assert _blobs_match_their_names(tmp_path / "cache") == []
        said = [line for line in bad.stderr.splitlines() if "match its digest" in line or "hashes to" in line]
        assert said, bad.stderr
        print(f"{which}: {said[0][-160:]}")

        proxy.corrupt = None
        good = irctl("build", ctx, "--progress", "plain", "--output", f"type=local,dest={out}", env=cache)
        assert good.code == 0, good.stderr
        assert (out / "copy").read_text() == "hello\n"
        assert _blobs_match_their_names(tmp_path / "cache") == []
