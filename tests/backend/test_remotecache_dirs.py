"""A ``type=local`` cache directory someone else wrote, read and written as hostile input: reading
one that is malformed anywhere is a warning (never an exception out of the build); writing into one
whose index is not an OCI index refuses rather than overwrite it, and never prunes another tag's
blobs it cannot follow."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from backend.oci.layout import Platform
from backend.remotecache.export import CacheExportError, manifest_for
from backend.remotecache.layoutdir import write_dir
from backend.remotecache.format import CacheConfig
from backend.remotecache.options import CacheExport, CacheImport
from backend.remotecache.sources import load
from backend.store.blobs import BlobStore

TAG = {"org.opencontainers.image.ref.name": "latest"}


def put(d: Path, data: bytes) -> str:
    h = hashlib.sha256(data).hexdigest()
    (d / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (d / "blobs" / "sha256" / h).write_bytes(data)
    return "sha256:" + h


def layout(d: Path, index: object) -> Path:
    (d / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (d / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (d / "index.json").write_text(json.dumps(index))
    return d


def tagged(d: Path, body: object) -> dict:
    return {"manifests": [{"annotations": TAG, "digest": put(d, json.dumps(body).encode())}]}


def read(d: Path) -> list[str]:
    warned: list[str] = []
    remote = load([CacheImport("local", path=str(d))], client=lambda: None, platform=Platform.host(),
                  warn=warned.append)
    assert not remote
    return warned


@pytest.mark.parametrize("index", [
    [], {"manifests": "abc"}, {"manifests": ["x"]}, {"manifests": [{"annotations": "x", "digest": "sha256:0"}]},
    {"manifests": [{"annotations": TAG}]}, {"manifests": [{"annotations": TAG, "digest": 5}]},
], ids=["list", "manifests-str", "entry-str", "annotations-str", "no-digest", "digest-int"])
def test_a_malformed_index_is_a_warning(tmp_path, index):
    (warning,) = read(layout(tmp_path, index))
    assert warning.startswith(f"warning: --cache-from {tmp_path}:latest: {tmp_path}/index.json: not an OCI index")


@pytest.mark.parametrize("body", [
    {"manifests": ["x", 3]}, {"manifests": [{"platform": "linux", "digest": "sha256:0"}]}, {"manifests": {}},
], ids=["entries-not-objects", "platform-str", "manifests-object"])
def test_a_malformed_nested_index_is_a_warning(tmp_path, body):
    (warning,) = read(layout(tmp_path, tagged(tmp_path, body)))
    assert "not an OCI index" in warning


@pytest.mark.parametrize("body, why", [
    ({"config": "x"}, "its manifest has no config"),
    ({"mediaType": [], "config": {}}, "neither an irctl cache nor an image"),
    ([1], "not a JSON object"),
])
def test_a_malformed_manifest_is_a_warning(tmp_path, body, why):
    (warning,) = read(layout(tmp_path, tagged(tmp_path, body)))
    assert why in warning


def test_a_traversing_digest_is_a_warning(tmp_path):
    (warning,) = read(layout(tmp_path, {"manifests": [{"annotations": TAG, "digest": "sha256:../../etc/passwd"}]}))
    assert "digest" in warning


@pytest.mark.parametrize("index", ['{"manifests": 5}', '[1]', '{"manifests": [{"annotations": "x", "digest": "a"}]}',
                                   '{"manifests": [{"digest": 5}]}', "{"])
def test_writing_over_an_index_that_is_not_one_refuses_and_writes_nothing(tmp_path, index):
    d = tmp_path / "dest"
    (d / "blobs" / "sha256").mkdir(parents=True)
    (d / "index.json").write_text(index)
    store = BlobStore(tmp_path / "store")
    manifest, mt = manifest_for(CacheConfig(), store)
    with pytest.raises(CacheExportError, match="is not an OCI image index"):
        write_dir(CacheExport("local", path=str(d)), manifest, mt, store, {}, lambda *a: None)
    assert (d / "index.json").read_text() == index
    assert list((d / "blobs" / "sha256").iterdir()) == []


def test_another_tags_multi_platform_image_keeps_its_blobs(tmp_path):
    """A cache written into a layout that also holds an image index: the index's manifests and
    their blobs are not pruned (they are not named by the top-level index itself)."""
    d = tmp_path / "dest"
    config = put(d, b'{"architecture":"amd64","os":"linux"}')
    layer = put(d, b"layer bytes")
    child = json.dumps({"schemaVersion": 2, "config": {"digest": config, "size": 1},
                        "layers": [{"digest": layer, "size": 11}]}).encode()
    child_digest = put(d, child)
    nested = put(d, json.dumps({"schemaVersion": 2, "manifests": [{"digest": child_digest, "size": len(child),
                                                                    "platform": {"os": "linux"}}]}).encode())
    layout(d, {"schemaVersion": 2, "manifests": [{"digest": nested, "size": 1, "annotations": {
        "org.opencontainers.image.ref.name": "app"}}]})
    store = BlobStore(tmp_path / "store")
    manifest, mt = manifest_for(CacheConfig(), store)
    write_dir(CacheExport("local", path=str(d)), manifest, mt, store, {}, lambda *a: None)
    names = {"sha256:" + p.name for p in (d / "blobs" / "sha256").iterdir()}
    assert {config, layer, child_digest, nested} <= names
    assert len(json.loads((d / "index.json").read_text())["manifests"]) == 2


def test_buildkits_cache_is_named_as_such(tmp_path):
    """buildx's own caches (an index, or with image-manifest=true a manifest, naming a
    ``application/vnd.buildkit.cacheconfig.v0`` config) are not mistaken for a broken one."""
    bk = "application/vnd.buildkit.cacheconfig.v0"
    cfg = put(tmp_path / "a", b"{}")
    (warning,) = read(layout(tmp_path / "a", tagged(tmp_path / "a", {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": bk, "digest": cfg, "size": 2}]})))
    assert "it is BuildKit's cache" in warning
    cfg = put(tmp_path / "b", b"{}")
    (warning,) = read(layout(tmp_path / "b", tagged(tmp_path / "b", {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": bk, "digest": cfg, "size": 2}, "layers": []})))
    assert "it is BuildKit's cache" in warning


@pytest.mark.parametrize("manifest", [b"[]", b'"x"', b'{"mediaType": "application/vnd.oci.image.index.v1+json", '
                                                  b'"manifests": [1]}'])
def test_a_registry_answering_a_manifest_that_is_not_an_object_is_a_warning(manifest):
    """A registry (or anything answering on its port) whose manifest is JSON but not an object."""
    import http.server
    import threading

    from backend.oci.registry import RegistryClient

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            body = b"{}" if self.path == "/v2/" else manifest
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = RegistryClient()
    try:
        warned: list[str] = []
        ref = f"127.0.0.1:{server.server_address[1]}/app:cache"
        remote = load([CacheImport("registry", ref=ref)], client=lambda: client, platform=Platform.host(),
                      warn=warned.append)
        assert not remote
        assert len(warned) == 1 and warned[0].startswith(f"warning: --cache-from {ref}: ")
    finally:
        client.close()
        server.shutdown()


@pytest.mark.parametrize("what", ["index.json", "config", "device"])  # (a FIFO; a FIFO; /dev/zero)
def test_a_fifo_or_device_in_a_cache_dir_is_a_warning_not_a_hang(tmp_path, what):
    """A directory restored by a CI system from someone else's run: a FIFO where a file should be
    would block the build forever on open, a device (a symlink to /dev/zero) read it without end."""
    import os
    import threading

    body = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.irctl.cache.config.v1+json", "digest": "sha256:" + "a" * 64,
                       "size": 10}, "layers": []}
    d = layout(tmp_path / "d", tagged(tmp_path / "d", body))
    target = d / "index.json" if what == "index.json" else d / "blobs" / "sha256" / ("a" * 64)
    target.unlink(missing_ok=True)
    if what == "device":
        target.symlink_to("/dev/zero")
    else:
        os.mkfifo(target)
    warned: list[str] = []
    reader = threading.Thread(target=lambda: warned.extend(read(d)), daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # unblock the reader stuck in open() before failing
        os.close(os.open(target, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(10)
        pytest.fail(f"reading a cache dir whose {what} is a FIFO blocked")
    assert len(warned) == 1, warned
    assert ("no index.json" if what == "index.json" else f"blobs/sha256/{'a' * 64} is not a regular file") in warned[0]


def test_writing_over_a_fifo_index_refuses_and_does_not_hang(tmp_path):
    import os

    d = tmp_path / "dest"
    (d / "blobs" / "sha256").mkdir(parents=True)
    os.mkfifo(d / "index.json")
    store = BlobStore(tmp_path / "store")
    manifest, mt = manifest_for(CacheConfig(), store)
    with pytest.raises(CacheExportError, match="index.json is not a regular file"):
        write_dir(CacheExport("local", path=str(d)), manifest, mt, store, {}, lambda *a: None)
