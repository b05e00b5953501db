"""Cache mounts travel (``--cache-to …,mounts=``, restored by ``--cache-from``): an apt-style step
on a second machine (a second cache dir) finds what the first one downloaded into its
``RUN --mount=type=cache`` dir; what a mount's copy must never do (overwrite a local dir, carry a
secret value, come back as something else than it was, break a build when it is broken)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.support.cli import build_ok, irctl, write

SDE = {"SOURCE_DATE_EPOCH": "0"}

# "Downloads" a package into the cache mount only when it is absent, and records in the layer
# whether it found it (and the mount root's owner and mode), as `apt-get install` with
# /var/cache/apt as a cache mount does.
APT = """\
FROM {base}
ARG CHANGE=1
RUN --mount=type=cache,target=/var/cache/apt{opts} \\
    if [ -f /var/cache/apt/archives/pkg.deb ]; then echo found > /found; \\
    else mkdir -p /var/cache/apt/archives && echo "package $CHANGE" > /var/cache/apt/archives/pkg.deb \\
         && echo fetched > /found; fi; \\
    cat /var/cache/apt/archives/pkg.deb > /pkg; stat -c '%u:%g:%a' /var/cache/apt > /root-stat
"""


def _ctx(tmp_path: Path, base: str, name: str = "ctx", opts: str = "", extra: str = "") -> Path:
    return write(tmp_path / name, {"Dockerfile": APT.format(base=base, opts=opts) + extra})


def _build(ctx: Path, cache: Path, out: Path, *extra: str) -> str:
    return build_ok(ctx, {"IRCTL_CACHE_DIR": str(cache), **SDE}, "-o", f"type=local,dest={out}", *extra)


def test_an_apt_style_step_on_machine_b_finds_what_machine_a_fetched(tmp_path, busybox_ref, registry):
    ctx = _ctx(tmp_path, busybox_ref)
    ref = f"{registry}/irctl-test/mounts:cache"
    a = _build(ctx, tmp_path / "A", tmp_path / "outA",
               "--cache-to", f'type=registry,ref={ref},"mounts=/var/cache/apt,/not/used"')
    assert (tmp_path / "outA/found").read_text() == "fetched\n"
    assert "no step of this build mounts a cache with id '/not/used'" in a, a
    assert "1 cache mounts;" in a, a
    # machine B: an empty cache dir, and a change that makes the RUN step run again
    b = _build(ctx, tmp_path / "B", tmp_path / "outB", "--cache-from", ref, "--build-arg", "CHANGE=2")
    assert next(line for line in b.splitlines() if line.startswith(f"=> cache {ref}:")).endswith(" 1 cache mounts"), b
    run = next(line.split()[0] for line in b.splitlines() if " RUN --mount" in line)
    assert f"{run} restoring cache mount /var/cache/apt 0B / " in b, b  # its bytes, under the step that mounts it
    assert f"{run} DONE" in b, b  # the step ran ...
    assert (tmp_path / "outB/found").read_text() == "found\n"  # ... and found A's download
    assert (tmp_path / "outB/pkg").read_text() == "package 1\n"


def test_every_mount_of_a_local_cache_with_its_id_owner_and_mode(tmp_path, busybox_ref):
    opts = ",id=apt-archives,uid=1000,gid=100,mode=0750"
    other = ("RUN --mount=type=cache,target=/other "
             "sh -c 'test -f /other/x && echo yes > /other-found || touch /other/x'\n")
    ctx = _ctx(tmp_path, busybox_ref, opts=opts, extra=other)
    cache = tmp_path / "shared"
    a = _build(ctx, tmp_path / "A", tmp_path / "outA", "--cache-to", f"type=local,dest={cache},mounts=*")
    assert "2 cache mounts;" in a, a
    b = _build(ctx, tmp_path / "B", tmp_path / "outB", "--cache-from", f"type=local,src={cache}",
               "--build-arg", "CHANGE=2")
    assert (tmp_path / "outB/found").read_text() == "found\n"
    assert (tmp_path / "outB/root-stat").read_text() == "1000:100:750\n"  # the IR's, on the restored root
    assert (tmp_path / "outB/other-found").read_text() == "yes\n"
    assert "restoring cache mount apt-archives" in b, b


def test_a_local_mount_is_never_overwritten_by_a_restore(tmp_path, busybox_ref):
    ctx = _ctx(tmp_path, busybox_ref)
    cache = tmp_path / "shared"
    _build(ctx, tmp_path / "A", tmp_path / "outA", "--cache-to", f"type=local,dest={cache},mounts=*")
    # B already has its own /var/cache/apt (from a build that downloaded "package 7")
    _build(ctx, tmp_path / "B", tmp_path / "out0", "--build-arg", "CHANGE=7")
    b = _build(ctx, tmp_path / "B", tmp_path / "outB", "--cache-from", f"type=local,src={cache}",
               "--build-arg", "CHANGE=2")
    assert "restoring cache mount" not in b, b
    assert (tmp_path / "outB/pkg").read_text() == "package 7\n"


def _layout_cache(cache: Path) -> tuple[dict, dict, dict]:
    index = json.loads((cache / "index.json").read_text())
    manifest = json.loads(_blob(cache, index["manifests"][-1]["digest"]).read_text())
    config = json.loads(_blob(cache, manifest["config"]["digest"]).read_text())
    return index, manifest, config


def _blob(cache: Path, digest: str) -> Path:
    return cache / "blobs" / "sha256" / digest.split(":", 1)[1]


def _put(cache: Path, data: bytes) -> dict:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _blob(cache, digest).write_bytes(data)
    return {"digest": digest, "size": len(data)}


def _replace_mount(cache: Path, tar: bytes) -> None:
    """Make the cache directory's only cache mount the (uncompressed) ``tar``, as another writer could."""
    index, manifest, config = _layout_cache(cache)
    d = _put(cache, tar)
    config["mounts"][0].update(blob=d["digest"], diff_id=d["digest"], size=d["size"],
                               mediaType="application/vnd.oci.image.layer.v1.tar")
    manifest["config"].update(_put(cache, json.dumps(config).encode()))
    manifest["layers"].append({"mediaType": "application/vnd.oci.image.layer.v1.tar", **d})
    index["manifests"][-1].update(_put(cache, json.dumps(manifest).encode()))
    (cache / "index.json").write_text(json.dumps(index))


def _tar(entries: list[tuple[str, bytes | str]]) -> bytes:
    """A tar of regular files (bytes) and symlinks (str: the link target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, body in entries:
            ti = tarfile.TarInfo(name)
            if isinstance(body, str):
                ti.type, ti.linkname = tarfile.SYMTYPE, body
                tf.addfile(ti)
            else:
                ti.size = len(body)
                tf.addfile(ti, io.BytesIO(body))
    return buf.getvalue()


def test_a_broken_or_hostile_mount_copy_is_dropped_and_the_build_succeeds(tmp_path, busybox_ref):
    ctx = _ctx(tmp_path, busybox_ref)
    cache = tmp_path / "shared"
    _build(ctx, tmp_path / "A", tmp_path / "outA", "--cache-to", f"type=local,dest={cache},mounts=*")
    outside = tmp_path / "outside"
    outside.mkdir()
    cases = {
        "whiteout": ([("archives/.wh.pkg.deb", b"")], "'archives/pkg.deb' is an overlay whiteout"),
        "opaque": ([("archives/.wh..wh..opq", b""), ("archives/pkg.deb", b"hostile\n")],
                   "'archives' carries the overlay opaque mark"),
        "escape": ([("archives", str(outside)), ("archives/pkg.deb", b"hostile\n")],
                   "refusing 'archives/pkg.deb': path goes through symlink 'archives'"),
        "traversal": ([("../../pkg.deb", b"hostile\n")], "refusing entry name '../../pkg.deb'"),
    }
    for i, (case, (entries, why)) in enumerate(cases.items()):
        _replace_mount(cache, _tar(entries))
        b = _build(ctx, tmp_path / f"B{i}", tmp_path / f"outB{i}", "--cache-from", f"type=local,src={cache}",
                   "--build-arg", "CHANGE=2")
        assert f"cache mount '/var/cache/apt' from cache directory {cache}: {why}" in b, (case, b)
        assert "building on without it" in b, (case, b)
        assert (tmp_path / f"outB{i}/found").read_text() == "fetched\n", case  # an empty mount
        assert list(outside.iterdir()) == [], case
    # a blob that is not what its digest says
    _index, _manifest, config = _layout_cache(cache)
    _blob(cache, config["mounts"][0]["blob"]).write_bytes(b"\0" * config["mounts"][0]["size"])
    b = _build(ctx, tmp_path / "C", tmp_path / "outC", "--cache-from", f"type=local,src={cache}",
               "--build-arg", "CHANGE=2")
    assert f"cache mount '/var/cache/apt' from cache directory {cache}: " in b and "building on without it" in b, b
    assert (tmp_path / "outC/found").read_text() == "fetched\n"


def test_a_mount_holding_overlay_lookalikes_is_not_exported(tmp_path, busybox_ref):
    ctx = _ctx(tmp_path, busybox_ref, extra="RUN --mount=type=cache,target=/var/cache/apt touch /var/cache/apt/.wh.x\n")
    a = _build(ctx, tmp_path / "A", tmp_path / "outA", "--cache-to", f"type=local,dest={tmp_path / 'shared'},mounts=*")
    assert "cache mount '/var/cache/apt': '.wh.x' is named like an overlay whiteout" in a, a
    assert "cache mounts" not in a.split("cache exported to")[1], a
    assert _layout_cache(tmp_path / "shared")[2]["mounts"] == []


def test_a_fully_cached_build_carries_the_mount_on(tmp_path, busybox_ref):
    """B's build is all hits from A's cache (its RUN never mounts the dir); its own --cache-to still
    carries A's copy, so C, after a change, finds A's download."""
    ctx = _ctx(tmp_path, busybox_ref)
    one, two = tmp_path / "one", tmp_path / "two"
    _build(ctx, tmp_path / "A", tmp_path / "outA", "--cache-to", f"type=local,dest={one},mounts=*")
    b = _build(ctx, tmp_path / "B", tmp_path / "outB", "--cache-from", f"type=local,src={one}",
               "--cache-to", f"type=local,dest={two},mode=max,mounts=*")
    assert "restoring cache mount" not in b and "1 cache mounts;" in b, b
    c = _build(ctx, tmp_path / "C", tmp_path / "outC", "--cache-from", f"type=local,src={two}",
               "--build-arg", "CHANGE=3")
    assert (tmp_path / "outC/found").read_text() == "found\n", c


SECRET_STEP = """\
FROM {base}
ARG FAIL=0
RUN --mount=type=secret,id=tok --mount=type=cache,target=/var/cache/apt \\
    cp /run/secrets/tok /var/cache/apt/token; test "$FAIL" = 0
"""


def test_a_mount_a_step_wrote_a_secret_into_is_never_exported(tmp_path, busybox_ref):
    secret = tmp_path / "tok"
    secret.write_text("s3cr3t-value-for-the-mount-test\n")
    cache = tmp_path / "shared"
    for fail in ("1", "0"):  # whether or not the step that wrote it succeeded
        store = tmp_path / f"store{fail}"
        ctx = write(tmp_path / f"ctx{fail}", {"Dockerfile": SECRET_STEP.format(base=busybox_ref)})
        r = irctl("build", "--progress", "plain", ctx, "--secret", f"id=tok,src={secret}", "--build-arg",
                  f"FAIL={fail}", "--cache-to", f"type=local,dest={cache},mounts=*,compression=uncompressed",
                  env={"IRCTL_CACHE_DIR": str(store), **SDE})
        assert (r.code != 0) == (fail == "1"), r.stderr
        assert fail == "1" or "a step wrote a secret value of its build into it; never exported" in r.stderr
        # a later build without the secret (the value is unknown to it) exports the same store
        other = write(tmp_path / f"later{fail}", {"Dockerfile": f"FROM {busybox_ref}\nRUN --mount=type=cache,"
                                                  "target=/var/cache/apt ls /var/cache/apt\n"})
        later = _build(other, store, tmp_path / f"out{fail}", "--cache-to",
                       f"type=local,dest={cache},mounts=*,compression=uncompressed")
        assert "a step wrote a secret value of its build into it; never exported" in later, later
        assert _layout_cache(cache)[2]["mounts"] == []
        for p in (cache / "blobs" / "sha256").iterdir():
            assert b"s3cr3t-value" not in p.read_bytes()


REAL_APT = """\
FROM 127.0.0.1:5000/debian:bookworm
ARG CHANGE=1
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\
    --mount=type=cache,target=/var/lib/apt/lists,sharing=locked \\
    rm -f /etc/apt/apt.conf.d/docker-clean && echo "$CHANGE" && apt-get update -q \\
    && apt-get install -y -q --no-install-recommends hello > /apt.log 2>&1
"""


def _real_apt_or_skip() -> None:
    import socket
    import urllib.request

    try:
        with urllib.request.urlopen("http://127.0.0.1:5000/v2/debian/tags/list", timeout=2) as r:
            if b"bookworm" not in r.read():
                raise OSError("no bookworm tag")
        socket.create_connection(("deb.debian.org", 80), timeout=3).close()
    except OSError as e:
        pytest.skip(f"needs 127.0.0.1:5000/debian:bookworm (../shared/anchors/setup.sh) and deb.debian.org: {e}")


def test_real_apt_on_machine_b_downloads_nothing_machine_a_fetched(tmp_path):
    """Debian's apt, its archives and lists as cache mounts (~25 s, network): B needs 0 B."""
    _real_apt_or_skip()
    ctx = write(tmp_path / "ctx", {"Dockerfile": REAL_APT})
    cache = tmp_path / "shared"
    env = {"IRCTL_CACHE_DIR": str(tmp_path / "A"), **SDE}
    r = irctl("build", "--progress", "plain", ctx, "-o", f"type=local,dest={tmp_path / 'outA'}",
              "--cache-to", f"type=local,dest={cache},mounts=*", env=env)
    if r.code != 0 and any(s in r.stderr for s in ("Failed to fetch", "Temporary failure", "Could not resolve")):
        pytest.skip("the Debian mirror did not answer")
    assert r.code == 0, r.stderr[-3000:]
    assert "Get:" in (tmp_path / "outA/apt.log").read_text()  # A downloaded hello
    b = _build(ctx, tmp_path / "B", tmp_path / "outB", "--cache-from", f"type=local,src={cache}",
               "--build-arg", "CHANGE=2")
    assert "restoring cache mount /var/cache/apt" in b, b
    log = (tmp_path / "outB/apt.log").read_text()
    assert "Need to get 0 B/" in log and "Get:" not in log.split("Reading package lists")[-1], log
