"""A ``--cache-from`` cache written by someone else: what it may make a build do beyond using its
results for that build.  Each test plays the attacker on a ``type=local`` cache directory (the same
document a registry holds) and checks what the victim's image, store or terminal got."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import tarfile
from pathlib import Path

import pytest

from backend.ops.workspace import layers_identity
from tests.support.cli import irctl

SDE = "1700000000"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":", 1)[1]


def put_blob(layout: Path, data: bytes) -> str:
    digest = sha(data)
    blob_path(layout, digest).write_bytes(data)
    return digest


def read_doc(layout: Path) -> dict:
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(blob_path(layout, index["manifests"][-1]["digest"]).read_bytes())
    return json.loads(blob_path(layout, manifest["config"]["digest"]).read_bytes())


def write_doc(layout: Path, doc: dict) -> None:
    """Replace the cache in ``layout`` by ``doc`` (its blobs already there), as an attacker would."""
    config = json.dumps(doc).encode()
    cdesc = {"mediaType": "application/vnd.irctl.cache.config.v1+json", "digest": put_blob(layout, config),
             "size": len(config)}
    layers = [{"mediaType": x["mediaType"], "digest": x["blob"], "size": x["size"]} for x in doc["layers"]]
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "artifactType": "application/vnd.irctl.cache.v1", "config": cdesc,
                           "layers": layers}).encode()
    entry = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put_blob(layout, manifest),
             "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "latest"}}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))


def image_layers(layout: Path) -> list[bytes]:
    """The uncompressed layer tars of the one image in the OCI layout ``layout``."""
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(blob_path(layout, index["manifests"][0]["digest"]).read_bytes())
    out = []
    for d in manifest["layers"]:
        data = blob_path(layout, d["digest"]).read_bytes()
        out.append(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
    return out


def image_config(layout: Path) -> dict:
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(blob_path(layout, index["manifests"][0]["digest"]).read_bytes())
    return json.loads(blob_path(layout, manifest["config"]["digest"]).read_bytes())


def build(ctx: Path, cache: Path, *extra: str):
    return irctl("build", "--progress", "plain", "--cache-dir", cache, *extra, ctx, env={"SOURCE_DATE_EPOCH": SDE})


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("hello\n")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY a.txt /a.txt\n")
    return ctx


@pytest.fixture
def shared(ctx: Path, tmp_path: Path) -> Path:
    """A cache (mode=max) of building ``ctx`` on another machine."""
    lc = tmp_path / "shared"
    r = build(ctx, tmp_path / "writer", "--cache-to", f"type=local,dest={lc},mode=max")
    assert r.code == 0, r.stderr
    return lc


def test_a_cached_layer_blob_carrying_more_than_its_tree_never_becomes_the_images_layer(ctx, shared, tmp_path):
    """The tree digest leaves out what extraction skips (a ``system.*`` xattr: an ACL).  A blob with the
    right tree but such an extra must not be what the victim's image (or any later export) ships."""
    doc = read_doc(shared)
    (layer,) = doc["layers"]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("a.txt")
        ti.size, ti.mode, ti.mtime = 6, 0o644, int(SDE)
        ti.pax_headers = {"SCHILY.xattr.system.posix_acl_access": "planted"}
        tf.addfile(ti, io.BytesIO(b"hello\n"))
    tar = raw.getvalue()
    blob = gzip.compress(tar, mtime=0)
    layer.update(blob=put_blob(shared, blob), size=len(blob), diff_id=sha(tar))
    write_doc(shared, doc)

    r = build(ctx, tmp_path / "victim", "--cache-from", f"type=local,src={shared}", "-o",
              f"type=oci,dest={tmp_path / 'img'},tar=false")
    assert r.code == 0, r.stderr
    assert "#3 CACHED" in r.stderr  # the tree matched: the files were used
    (shipped,) = image_layers(tmp_path / "img")
    assert b"planted" not in shipped and b"posix_acl" not in shipped


def _blocked_on(lock: Path) -> bool:
    ino = os.stat(lock).st_ino
    return any("->" in line and line.split()[6].endswith(f":{ino}")
               for line in Path("/proc/locks").read_text().splitlines() if len(line.split()) > 6)


def test_a_blob_dir_swapped_for_a_symlink_during_an_export_writes_and_removes_nothing_elsewhere(ctx, shared,
                                                                                                 tmp_path):
    """Someone who can write the cache directory swaps ``blobs/sha256`` for a link to another
    directory while the victim's export waits for the layout's lock: neither the blobs written (an
    attacker's cache can choose their bytes, and ``/etc/cron.d`` takes hex names) nor the pruning
    may follow it."""
    import fcntl
    import subprocess
    import sys
    import time

    elsewhere = tmp_path / "precious"
    elsewhere.mkdir()
    (elsewhere / "notes.txt").write_text("keep me\n")
    lock = shared / ".irctl-cache.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        writer = subprocess.Popen([sys.executable, "-m", "irctl", "build", "--cache-dir", tmp_path / "writer",
                                   "--cache-to", f"type=local,dest={shared},mode=max", ctx],
                                  env={**os.environ, "SOURCE_DATE_EPOCH": SDE}, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while not _blocked_on(lock):
            assert writer.poll() is None and time.monotonic() < deadline, writer.communicate()
            time.sleep(0.05)
        os.rename(shared / "blobs" / "sha256", shared / "blobs" / "real")
        os.symlink(elsewhere, shared / "blobs" / "sha256")
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    _, err = writer.communicate(timeout=60)
    assert [p.name for p in elsewhere.iterdir()] == ["notes.txt"]
    assert (elsewhere / "notes.txt").read_text() == "keep me\n"
    assert writer.returncode != 0 and b"its sha256 is not a directory" in err and b"Traceback" not in err


def test_a_fifo_planted_in_a_cache_directory_does_not_hang_the_export(ctx, shared, tmp_path):
    """A FIFO where another tag's manifest should be: reading it would wait, lock held, forever.
    The export goes on, and prunes nothing it cannot read."""
    index = json.loads((shared / "index.json").read_text())
    other = "sha256:" + "1" * 64
    os.mkfifo(blob_path(shared, other))
    index["manifests"].append({"digest": other, "annotations": {"org.opencontainers.image.ref.name": "other"}})
    (shared / "index.json").write_text(json.dumps(index))
    r = irctl("build", "--cache-dir", tmp_path / "writer", "--cache-to", f"type=local,dest={shared},tag=new", ctx,
              env={"SOURCE_DATE_EPOCH": SDE}, timeout=60)
    assert r.code == 0, r.stderr
    assert f"cache exported to {shared}:new" in r.stderr


@pytest.mark.parametrize("index", ["[1]", '{"manifests": ["x"]}', '{"manifests": [{"annotations": []}]}',
                                   '{"manifests": [{"annotations": {"org.opencontainers.image.ref.name": "latest"}}]}',
                                   "[" * 100_000, '{"manifests": []}' + " " * (5 << 20)],
                         ids=["list", "string-entry", "annotations-list", "no-digest", "deep", "huge"])
def test_a_malformed_cache_index_is_a_warning_not_a_crash(ctx, tmp_path, index):
    bad = tmp_path / "bad"
    (bad / "blobs" / "sha256").mkdir(parents=True)
    (bad / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (bad / "index.json").write_text(index)
    r = build(ctx, tmp_path / "victim", "--cache-from", f"type=local,src={bad}")
    assert r.code == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert f"warning: --cache-from {bad}:latest: " in r.stderr and "building without it" in r.stderr
    assert ("index.json is larger than" in r.stderr) == (len(index) > 4 << 20)  # not read into memory


def test_a_fifo_planted_as_a_cache_blob_does_not_hang_the_build(ctx, shared, tmp_path):
    index = json.loads((shared / "index.json").read_text())
    manifest = blob_path(shared, index["manifests"][-1]["digest"])
    manifest.unlink()
    os.mkfifo(manifest)  # opening it for reading would wait for a writer forever
    r = irctl("build", "--cache-dir", tmp_path / "victim", "--cache-from", f"type=local,src={shared}", ctx,
              env={"SOURCE_DATE_EPOCH": SDE}, timeout=60)
    assert r.code == 0, r.stderr
    assert "is not a regular file; building without it" in r.stderr


def test_an_inline_cache_keeps_an_image_reproducible(ctx, tmp_path):
    """With SOURCE_DATE_EPOCH, two machines building the same sources push the same image, inline
    cache or not (the document's step times are the image's, not the wall clock)."""
    digests = set()
    for machine in ("one", "two"):
        r = build(ctx, tmp_path / machine, "--cache-to", "type=inline",
                  "-o", f"type=oci,dest={tmp_path / machine}.tar")
        assert r.code == 0, r.stderr
        digests |= set(re.findall(r"exported OCI image (sha256:\w+)", r.stderr))
    assert len(digests) == 1


def patched(ctx: Path, tmp_path: Path) -> Path:
    """Other sources: ``ctx`` with ``a.txt`` changed (the fix the victim will build next)."""
    y = tmp_path / "y"
    y.mkdir()
    for f in ctx.iterdir():
        (y / f.name).write_bytes(f.read_bytes())
    (y / "a.txt").write_text("patched\n")
    return y


def later_build(y: Path, victim: Path, tmp_path: Path) -> list[bytes]:
    """The victim builds ``y`` later with no --cache-from at all; the image's layers."""
    r = build(y, victim, "-o", f"type=oci,dest={tmp_path / 'img'},tar=false")
    assert r.code == 0, r.stderr
    return image_layers(tmp_path / "img")


def _read_selection(doc: dict, stage: bool) -> list:
    """The selection entry of the COPY from the context, or of a COPY --from a built stage."""
    made = {o["identity"] for r in doc["records"] for o in r["outputs"]}
    (sel,) = [s for s in doc["selections"] if (s[0] in made) == stage]
    return sel


@pytest.mark.parametrize("source", ["context", "stage"])
def test_a_caches_selection_checksum_never_files_a_local_result_under_another_contents_key(ctx, tmp_path, source):
    """The cache says what the victim's step reads (the context, or a built stage's files) has the
    checksum of *other* sources Y.  The COPY then runs on the real files; the local store must not
    keep that result under Y's key, where a later build of Y with no --cache-from would take it."""
    if source == "stage":
        (ctx / "Dockerfile").write_text("FROM scratch AS one\nCOPY a.txt /a.txt\nFROM scratch\n"
                                        "COPY --from=one /a.txt /b.txt\n")
    honest = tmp_path / "honest"  # only to learn the victim's identity there, as the attacker can
    assert build(ctx, tmp_path / "h", "--cache-to", f"type=local,dest={honest},mode=max").code == 0
    victim_identity = _read_selection(read_doc(honest), source == "stage")[0]
    y = patched(ctx, tmp_path)
    lc = tmp_path / "shared"
    assert build(y, tmp_path / "attacker", "--cache-to", f"type=local,dest={lc},mode=max").code == 0
    doc = read_doc(lc)
    _, action, checksum = _read_selection(doc, source == "stage")
    doc["selections"] = [[victim_identity, action, checksum]]
    doc["records"], doc["layers"] = [], []
    write_doc(lc, doc)

    victim = tmp_path / "victim"
    assert build(ctx, victim, "--cache-from", f"type=local,src={lc}").code == 0
    (layer,) = later_build(y, victim, tmp_path)
    assert b"patched" in layer and b"hello" not in layer


def test_a_caches_result_named_by_another_contents_identity_is_not_taken(ctx, tmp_path):
    """A result's identity keys every step on top of it.  The cache gives the victim's ``COPY`` its
    real layer but the identity of *other* sources' layer; the step on top then runs here and would be
    filed under a key that a later build of those other sources (no --cache-from) computes too."""
    stages = "FROM scratch AS one\nCOPY a.txt /a.txt\nFROM one\nCOPY c.txt /c.txt\n"
    (ctx / "Dockerfile").write_text(stages)
    (ctx / "c.txt").write_text("c\n")
    lc = tmp_path / "shared"
    assert build(ctx, tmp_path / "attacker-x", "--cache-to", f"type=local,dest={lc},mode=max").code == 0
    y = patched(ctx, tmp_path)
    other = tmp_path / "other"
    assert build(y, tmp_path / "attacker-y", "--cache-to", f"type=local,dest={other},mode=max").code == 0

    def first_copy(doc: dict) -> dict:
        (rec,) = [r for r in doc["records"] if len(r["outputs"][0]["layers"]) == 1 and not r["outputs"][0]["image"]]
        return rec

    doc = read_doc(lc)
    rec = first_copy(doc)
    rec["outputs"][0]["identity"] = first_copy(read_doc(other))["outputs"][0]["identity"]
    doc["records"] = [rec]
    write_doc(lc, doc)

    victim = tmp_path / "victim"
    assert build(ctx, victim, "--cache-from", f"type=local,src={lc}").code == 0
    assert any(b"patched" in layer for layer in later_build(y, victim, tmp_path))


def test_an_honest_caches_run_steps_and_image_config_are_still_taken(busybox_ref, tmp_path):
    """What the checks above leave alone: a RUN on a base image, an image config over it."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {busybox_ref}\nRUN echo hi > /hi\nENV X=1\n")
    lc = tmp_path / "shared"
    a = build(ctx, tmp_path / "writer", "--cache-to", f"type=local,dest={lc},mode=max",
              "-o", f"type=oci,dest={tmp_path / 'a.tar'}")
    assert a.code == 0, a.stderr
    b = build(ctx, tmp_path / "reader", "--cache-from", f"type=local,src={lc}",
              "-o", f"type=oci,dest={tmp_path / 'b.tar'}")
    assert b.code == 0, b.stderr
    assert "RUN echo hi > /hi\n#2 CACHED" in b.stderr and "exporting image config of stage-0\n#3 CACHED" in b.stderr
    digest = re.compile(r"exported OCI image (sha256:\w+)")
    assert digest.findall(a.stderr) == digest.findall(b.stderr)


def test_a_step_time_no_clock_can_show_is_refused_with_the_cache(ctx, shared, tmp_path):
    """``created`` goes into the image's history (and, via the local index, into later builds')."""
    doc = read_doc(shared)
    for rec in doc["records"]:
        for o in rec["outputs"]:
            o["created"] = [10 ** 30] * len(o["layers"])
    write_doc(shared, doc)
    r = irctl("build", "--cache-dir", tmp_path / "victim", "--cache-from", f"type=local,src={shared}", ctx,
              "-o", f"type=oci,dest={tmp_path / 'img.tar'}")  # no SOURCE_DATE_EPOCH: the times are shown
    assert r.code == 0, r.stderr
    assert "Traceback" not in r.stderr and "building without it" in r.stderr


def test_a_cache_carries_no_image_config(ctx, tmp_path):
    """An image config (an intermediate stage's ``ENV`` may hold a token) never goes into a cache:
    a reader makes an image step's config from the op itself."""
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY a.txt /a.txt\nENV MARK=m4rker\n")
    lc = tmp_path / "shared"
    assert build(ctx, tmp_path / "writer", "--cache-to", f"type=local,dest={lc},mode=max").code == 0
    assert b"m4rker" not in b"".join(p.read_bytes() for p in (lc / "blobs" / "sha256").iterdir())
    r = build(ctx, tmp_path / "reader", "--cache-from", f"type=local,src={lc}",
              "-o", f"type=oci,dest={tmp_path / 'img'},tar=false")
    assert r.code == 0, r.stderr
    assert "exporting image config of stage-0\n#4 CACHED" in r.stderr
    assert "MARK=m4rker" in image_config(tmp_path / "img")["config"]["Env"]


@pytest.mark.parametrize("lie", ["config", "layers"])
def test_an_image_steps_config_and_layers_are_the_ops_own_not_the_caches(ctx, shared, tmp_path, lie):
    """An image step's identity covers its input's identity and its config, not the result's layers
    or a config the cache adds: the layers are checked, the config is the op's own."""
    doc = read_doc(shared)
    (rec,) = [r for r in doc["records"] if r["outputs"][0]["identity"] != layers_identity(r["outputs"][0]["layers"])]
    out = rec["outputs"][0]
    if lie == "config":
        out["image"] = {"config": {"Entrypoint": ["/evil"]}, "history": [], "platform": {"os": "linux"}}
    else:
        out["layers"], out["created"] = out["layers"] * 2, out["created"] * 2
    write_doc(shared, doc)
    r = build(ctx, tmp_path / "victim", "--cache-from", f"type=local,src={shared}",
              "-o", f"type=oci,dest={tmp_path / 'img'},tar=false")
    assert r.code == 0, r.stderr
    assert "Entrypoint" not in image_config(tmp_path / "img")["config"]
    assert len(image_layers(tmp_path / "img")) == 1




def test_a_caches_claim_on_a_base_images_blob_does_not_redirect_the_base_images_pull(busybox_ref, tmp_path):
    """A cache names busybox's layer blob for a layer of its own and cannot serve it: the build
    drops the cache, and pulling busybox itself still fetches that blob from busybox's registry."""
    from types import SimpleNamespace

    from backend.oci.pull import ImageResolver, LayerUnavailable, RemoteLayer
    from backend.store.cache import CacheStore

    here = SimpleNamespace(os="linux", architecture="amd64", variant=None)
    (base,) = ImageResolver(CacheStore(tmp_path / "look")).resolve_registry(busybox_ref, "", here).layers
    images = ImageResolver(CacheStore(tmp_path / "victim"))
    gone, theirs = ("layout", tmp_path / "gone"), "sha256:" + "2" * 64
    images.add_remote({theirs: RemoteLayer(base.blob, base.media_type, base.size, base.diff_id, "")}, {}, gone)
    with pytest.raises(LayerUnavailable):
        images.ensure_layer(theirs)
    images.forget_remote(gone)
    images.resolve_registry(busybox_ref, "", here)
    assert (images.ensure_layer(base.diff_id) / "bin").is_dir()
