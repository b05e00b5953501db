"""``--cache-to`` / ``--cache-from`` end to end: two "machines" (two ``--cache-dir``) sharing a cache
through the loopback registry, an OCI layout directory or the image itself, and the faults a shared
cache must survive (missing, corrupt, tampered, another version or platform): each is a warning and
a build that still succeeds with the right files.

Which RUN steps executed is read from ``--progress plain`` (``#N DONE`` for a step that ran, ``#N
CACHED`` for a hit); image digests from the ``pushed sha256:… to REF`` line (SOURCE_DATE_EPOCH is
set, so equal inputs give equal images)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.cli import Result, irctl, write

pytestmark = pytest.mark.e2e

ENV = {"SOURCE_DATE_EPOCH": "1700000000"}
ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"


def build(ctx: Path, machine: Path, *args: str, code: int = 0) -> Result:
    r = irctl("build", "--progress", "plain", "--cache-dir", machine, *args, ctx, env=ENV)
    assert r.code == code, r.stderr
    assert "Traceback" not in r.stderr
    return r


def ran(stderr: str) -> list[str]:
    """The RUN steps that executed (``#N DONE``; a hit says ``#N CACHED``)."""
    names: dict[str, str] = {}
    out = []
    for line in stderr.splitlines():
        if m := re.match(r"#(\d+) \[[^\]]*\] (.*)", line):
            names.setdefault(m[1], m[2])
        elif (m := re.match(r"#(\d+) DONE", line)) and names.get(m[1], "").startswith("RUN "):
            out.append(names[m[1]])
    return out


def pushed(stderr: str) -> str:
    m = re.search(r"^pushed (sha256:[0-9a-f]{64}) to ", stderr, re.M)
    assert m, stderr
    return m[1]


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "warning: --cache-" in line]


def files(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): p.read_text() for p in sorted(out.rglob("*"))
            if p.is_file() and not p.is_symlink() and p.parent == out}


def store_layers_with(machine: Path, name: str) -> list[Path]:
    """The layer dirs of a machine's store holding ``name`` (relative path)."""
    return [p for p in (machine / "layers").iterdir() if (p / name).exists()]


# -- a two-stage build: the first stage's layers are intermediate -----------------------------------
def two_stage(tmp_path: Path, busybox_ref: str, src: str = "hello\n") -> Path:
    return write(tmp_path / "ctx", {
        "Dockerfile": f"""FROM {busybox_ref} AS build
RUN echo one > /one && sleep 0
COPY src.txt /src.txt
RUN mkdir /built && tr a-z A-Z < /src.txt > /built/out
FROM {busybox_ref}
COPY --from=build /built/out /out
RUN cat /out /out > /twice
""",
        "src.txt": src})


ALL_RUNS = ["RUN echo one > /one && sleep 0", "RUN mkdir /built && tr a-z A-Z < /src.txt > /built/out",
            "RUN cat /out /out > /twice"]


def cache_flags(kind: str, registry: str, tmp_path: Path, name: str, mode: str = "max") -> tuple[str, str, str]:
    """(``--cache-to`` of A, ``--cache-from`` of B, the tag A pushes)."""
    tag = f"{registry}/shared-{name}:a"
    if kind == "registry":
        ref = f"{registry}/shared-{name}:cache"
        return f"type=registry,ref={ref},mode={mode}", ref, tag
    if kind == "local":
        d = tmp_path / "cachedir"
        return f"type=local,dest={d},mode={mode}", f"type=local,src={d}", tag
    return "type=inline", tag, tag


@pytest.mark.parametrize("kind", ["registry", "local", "inline"])
def test_machine_b_runs_nothing_and_makes_the_same_image(tmp_path, busybox_ref, registry, kind):
    ctx = two_stage(tmp_path, busybox_ref)
    to, frm, tag = cache_flags(kind, registry, tmp_path, kind, mode="min" if kind == "inline" else "max")
    a = build(ctx, tmp_path / "A", "--cache-to", to, "-t", tag, "--push")
    assert ran(a.stderr) == ALL_RUNS
    assert "cache exported" in a.stderr or kind == "inline"
    b_extra = ("--cache-to", "type=inline") if kind == "inline" else ()  # the same image: with its inline cache
    b = build(ctx, tmp_path / "B", "--cache-from", frm, *b_extra, "-t", f"{registry}/shared-{kind}:b", "--push",
              "-o", f"type=local,dest={tmp_path / 'out'}")
    assert ran(b.stderr) == []
    assert re.search(rf"cache {re.escape(frm if kind != 'local' else str(tmp_path / 'cachedir'))}\S*: \d+ steps "
                     "imported", b.stderr), b.stderr
    assert pushed(b.stderr) == pushed(a.stderr)
    assert files(tmp_path / "out") == {"out": "HELLO\n", "twice": "HELLO\nHELLO\n"}
    assert warnings(b.stderr) == []


@pytest.mark.parametrize("mode", ["min", "max"])
def test_b_fetches_none_of_the_intermediate_stage(tmp_path, busybox_ref, registry, mode):
    ctx = two_stage(tmp_path, busybox_ref)
    ref = f"{registry}/shared-inter:{mode}"
    build(ctx, tmp_path / "A", "--cache-to", f"type=registry,ref={ref},mode={mode}")
    assert store_layers_with(tmp_path / "A", "one") and store_layers_with(tmp_path / "A", "built")  # A has them
    doc = registry_cache_document(registry, ref)
    inter = {x["blob"] for x in doc["layers"]} - set(image_layers_of_cache_targets(doc, tmp_path / "A", "twice"))
    b = build(ctx, tmp_path / "B", "--cache-from", ref, "-o", f"type=local,dest={tmp_path / 'out'}")
    assert ran(b.stderr) == []
    assert store_layers_with(tmp_path / "B", "one") == [] and store_layers_with(tmp_path / "B", "built") == []
    blobs = {"sha256:" + p.name for p in (tmp_path / "B" / "blobs" / "sha256").iterdir()}
    assert not (inter & blobs)
    if mode == "max":
        assert len(inter) == 3  # the cache holds them (RUN, COPY, RUN); B just never needed them
    assert files(tmp_path / "out") == {"out": "HELLO\n", "twice": "HELLO\nHELLO\n"}


def registry_cache_document(registry: str, ref: str) -> dict:
    repo, tag = ref.split("/", 1)[1].rsplit(":", 1)
    manifest = httpx.get(f"http://{registry}/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT}).json()
    return httpx.get(f"http://{registry}/v2/{repo}/blobs/{manifest['config']['digest']}").json()


def image_layers_of_cache_targets(doc: dict, machine: Path, last_file: str) -> list[str]:
    """The blobs of the target's layers: those of the result whose newest layer holds ``last_file``
    (found in the writing machine's store)."""
    by_id = {x["id"]: x["blob"] for x in doc["layers"]}
    (last,) = ["sha256:" + p.name for p in store_layers_with(machine, last_file)]
    (target,) = {tuple(o["layers"]) for r in doc["records"] for o in r["outputs"] if o["layers"][-1:] == [last]}
    return [by_id[lid] for lid in target if lid in by_id]


def test_min_cache_then_a_change_in_the_build_stage_builds_what_it_needs(tmp_path, busybox_ref, registry):
    ctx = two_stage(tmp_path, busybox_ref)
    ref = f"{registry}/shared-change:min"
    build(ctx, tmp_path / "A", "--cache-to", f"type=registry,ref={ref}")
    (ctx / "src.txt").write_text("bye\n")
    b = build(ctx, tmp_path / "B", "--cache-from", ref, "-o", f"type=local,dest={tmp_path / 'out'}")
    assert "building it again" in b.stderr
    assert ran(b.stderr)[-3:] == ALL_RUNS  # the first stage's files were needed: rebuilt
    assert files(tmp_path / "out") == {"out": "BYE\n", "twice": "BYE\nBYE\n"}


def test_early_cutoff_across_machines(tmp_path, busybox_ref, registry):
    ctx = two_stage(tmp_path, busybox_ref)
    ref = f"{registry}/shared-cutoff:max"
    a = build(ctx, tmp_path / "A", "--cache-to", f"type=registry,ref={ref},mode=max", "-t",
              f"{registry}/shared-cutoff:a", "--push")
    (ctx / "src.txt").write_text("HELLO\n")  # read by the tr step, which makes the same /built/out of it
    b = build(ctx, tmp_path / "B", "--cache-from", ref, "-t", f"{registry}/shared-cutoff:b", "--push")
    assert ran(b.stderr) == [ALL_RUNS[1]]  # the final stage's RUN: a remote hit after the re-run
    assert pushed(b.stderr) == pushed(a.stderr)


def test_several_cache_from_first_missing_second_good(tmp_path, busybox_ref, registry):
    ctx = two_stage(tmp_path, busybox_ref)
    good = f"{registry}/shared-several:cache"
    build(ctx, tmp_path / "A", "--cache-to", f"type=registry,ref={good}")
    missing = f"{registry}/shared-several:nothing-here"
    b = build(ctx, tmp_path / "B", "--cache-from", missing, "--cache-from", good)
    assert ran(b.stderr) == []
    assert warnings(b.stderr) == [f"=> warning: --cache-from {missing}: not found; building without it"]


def test_concurrent_exports_to_one_ref_and_one_dir_leave_valid_caches(tmp_path, busybox_ref, registry):
    ref = f"{registry}/shared-race:cache"
    d = tmp_path / "cachedir"
    ctxs = [two_stage(tmp_path / f"c{i}", busybox_ref, f"v{i}\n") for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-m", "irctl", "build", "--progress", "quiet", "--cache-dir",
                               str(tmp_path / f"A{i}"), "--cache-to", f"type=registry,ref={ref},mode=max",
                               "--cache-to", f"type=local,dest={d},mode=max", str(ctx)],
                              stderr=subprocess.PIPE, text=True, env={**os.environ, **ENV})
             for i, ctx in enumerate(ctxs)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert_layout_valid(d)
    for j, frm in enumerate((ref, f"type=local,src={d}")):
        results = [build(ctx, tmp_path / f"B{i}-{j}", "--cache-from", frm, "-o",
                         f"type=local,dest={tmp_path / f'out{i}-{j}'}") for i, ctx in enumerate(ctxs)]
        assert [] in [ran(r.stderr) for r in results]  # the last writer's build runs nothing
        for i in range(2):
            assert files(tmp_path / f"out{i}-{j}")["out"] == f"V{i}\n"
            assert not warnings(results[i].stderr)


def assert_layout_valid(d: Path) -> None:
    """Every blob the index reaches is there and matches its digest."""
    index = json.loads((d / "index.json").read_text())
    for m in index["manifests"]:
        manifest = json.loads(blob(d, m["digest"]))
        for x in [manifest["config"], *manifest["layers"]]:
            assert len(blob(d, x["digest"])) == x["size"]


def blob(d: Path, digest: str) -> bytes:
    data = (d / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
    return data


def test_ignore_error_on_an_unreachable_registry(tmp_path, busybox_ref):
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\nRUN echo a > /a\n"})
    dead = "127.0.0.1:9/x/cache:c"  # the discard port: nothing listens
    ok = build(ctx, tmp_path / "A", "--cache-to", f"type=registry,ref={dead},ignore-error=true")
    assert [w for w in ok.stderr.splitlines() if f"--cache-to {dead}" in w and "warning" in w and
            "ignore-error=true" in w]
    bad = build(ctx, tmp_path / "A", "--cache-to", f"type=registry,ref={dead}", code=1)
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and f"--cache-to {dead}" in errors[0], bad.stderr


# -- faults: each a warning, and a build that still succeeds with the right files ----------------------
def one_stage(tmp_path: Path, busybox_ref: str) -> Path:
    return write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\nRUN echo a > /a\nRUN echo b > /b\n"})


ONE_STAGE_RUNS = ["RUN echo a > /a", "RUN echo b > /b"]


@pytest.fixture(scope="module")
def one_stage_cache(tmp_path_factory, busybox_ref) -> Path:
    """A ``type=local`` cache (mode=max) of ``one_stage``, written once; tests damage copies of it."""
    work = tmp_path_factory.mktemp("one-stage-cache")
    a = build(one_stage(work, busybox_ref), work / "A", "--cache-to", f"type=local,dest={work / 'cachedir'},mode=max")
    assert ran(a.stderr) == ONE_STAGE_RUNS
    return work / "cachedir"


def local_cache(tmp_path: Path, template: Path) -> Path:
    d = tmp_path / "cachedir"
    shutil.copytree(template, d)
    return d


def local_manifest(d: Path) -> tuple[dict, dict]:
    index = json.loads((d / "index.json").read_text())
    manifest = json.loads(blob(d, index["manifests"][-1]["digest"]))
    return manifest, json.loads(blob(d, manifest["config"]["digest"]))


def layer_blobs(d: Path) -> list[Path]:
    """The files of the layer blobs the cache in ``d`` names."""
    _, doc = local_manifest(d)
    return [d / "blobs" / "sha256" / x["blob"].split(":")[1] for x in doc["layers"]]


def rewrite_document(d: Path, edit) -> None:
    """Give the cache in ``d`` the document ``edit(doc)`` makes (a new config, manifest and index)."""
    manifest, doc = local_manifest(d)
    edit(doc)
    raw = json.dumps(doc).encode()
    manifest["config"] = {**manifest["config"], "digest": put_blob(d, raw), "size": len(raw)}
    mraw = json.dumps(manifest).encode()
    index = json.loads((d / "index.json").read_text())
    index["manifests"][-1] = {**index["manifests"][-1], "digest": put_blob(d, mraw), "size": len(mraw)}
    (d / "index.json").write_text(json.dumps(index))


def put_blob(d: Path, data: bytes) -> str:
    h = hashlib.sha256(data).hexdigest()
    (d / "blobs" / "sha256" / h).write_bytes(data)
    return "sha256:" + h


def build_from(tmp_path: Path, ctx: Path, frm: str, *expect_warning: str) -> Result:
    """B's build from ``frm``: succeeds, with the right files and the warnings expected."""
    b = build(ctx, tmp_path / "B", "--cache-from", frm, "-o", f"type=local,dest={tmp_path / 'out'}")
    assert files(tmp_path / "out") == {"a": "a\n", "b": "b\n"}
    got = warnings(b.stderr)
    assert len(got) == len(expect_warning), b.stderr
    for w, want in zip(got, expect_warning):
        assert want in w, b.stderr
    return b


def test_an_undamaged_copy_runs_nothing(tmp_path, busybox_ref, one_stage_cache):
    """The control for the tests below: what they damage is a cache that works."""
    ctx = one_stage(tmp_path, busybox_ref)
    assert ran(build_from(tmp_path, ctx, f"type=local,src={local_cache(tmp_path, one_stage_cache)}").stderr) == []


def test_a_corrupt_config_blob_is_a_warning(tmp_path, busybox_ref, one_stage_cache):
    ctx = one_stage(tmp_path, busybox_ref)
    d = local_cache(tmp_path, one_stage_cache)
    manifest, _ = local_manifest(d)
    p = d / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]
    p.write_bytes(p.read_bytes().replace(b'"records"', b'"recordz"'))
    b = build_from(tmp_path, ctx, f"type=local,src={d}", "does not match its digest")
    assert ran(b.stderr) == ONE_STAGE_RUNS


def test_a_tampered_layer_blob_is_refused_and_the_step_runs(tmp_path, busybox_ref, one_stage_cache):
    ctx = one_stage(tmp_path, busybox_ref)
    d = local_cache(tmp_path, one_stage_cache)
    for p in layer_blobs(d):
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0xFF
        p.write_bytes(bytes(data))
    b = build_from(tmp_path, ctx, f"type=local,src={d}", "building on without it")
    assert "content hashes to" in warnings(b.stderr)[0]  # the blob store refused it on its digest
    assert ran(b.stderr) == ONE_STAGE_RUNS


def test_a_layer_id_naming_another_layers_blob_is_refused(tmp_path, busybox_ref, one_stage_cache):
    ctx = one_stage(tmp_path, busybox_ref)
    d = local_cache(tmp_path, one_stage_cache)

    def swap(doc):
        first, second = doc["layers"]
        for k in ("blob", "mediaType", "size", "diff_id"):
            first[k], second[k] = second[k], first[k]

    rewrite_document(d, swap)
    b = build_from(tmp_path, ctx, f"type=local,src={d}", "unpacks to the tree")
    assert ran(b.stderr) == ONE_STAGE_RUNS


def test_a_cache_of_another_version_is_a_warning(tmp_path, busybox_ref, one_stage_cache):
    ctx = one_stage(tmp_path, busybox_ref)
    d = local_cache(tmp_path, one_stage_cache)
    rewrite_document(d, lambda doc: doc.update(irctl_cache=2))
    b = build_from(tmp_path, ctx, f"type=local,src={d}", "cache format 2, this irctl reads format 1")
    assert ran(b.stderr) == ONE_STAGE_RUNS


def test_a_cache_for_another_platform_is_a_warning(tmp_path, busybox_ref, one_stage_cache):
    ctx = one_stage(tmp_path, busybox_ref)
    d = local_cache(tmp_path, one_stage_cache)
    rewrite_document(d, lambda doc: doc["platform"].update(architecture="arm64"))
    b = build_from(tmp_path, ctx, f"type=local,src={d}", "written for linux/arm64")
    assert ran(b.stderr) == ONE_STAGE_RUNS


def test_a_missing_local_cache_and_a_missing_tag_are_warnings(tmp_path, busybox_ref, one_stage_cache):
    ctx = one_stage(tmp_path, busybox_ref)
    build_from(tmp_path, ctx, f"type=local,src={tmp_path / 'nowhere'}", "no OCI layout")
    d = local_cache(tmp_path, one_stage_cache)
    shutil.rmtree(tmp_path / "B")
    build_from(tmp_path, ctx, f"type=local,src={d},tag=other", "no cache tagged 'other'")


def image_with_config(registry: str, busybox_layout: Path, tmp_path: Path, name: str, extra: dict) -> str:
    """busybox pushed as ``name`` with ``extra`` keys in its image config."""
    layout = tmp_path / f"layout-{name}"
    shutil.copytree(busybox_layout, layout)
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(blob(layout, index["manifests"][0]["digest"]))
    config = json.loads(blob(layout, manifest["config"]["digest"]))
    config.update(extra)
    raw = json.dumps(config).encode()
    manifest["config"] = {**manifest["config"], "digest": put_blob(layout, raw), "size": len(raw)}
    mraw = json.dumps(manifest).encode()
    index["manifests"][0] = {**index["manifests"][0], "digest": put_blob(layout, mraw), "size": len(mraw)}
    (layout / "index.json").write_text(json.dumps(index))
    ref = f"{registry}/shared-{name}:latest"
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:latest",
                    f"docker://{ref}"], check=True, capture_output=True)
    return ref


@pytest.mark.parametrize("extra, why", [
    ({"irctl.cache.v2": {"irctl_cache": 2}}, "'irctl.cache.v2', written by another irctl version"),
    ({"moby.buildkit.cache.v0": "e30="}, "BuildKit's inline cache"),
    ({}, "an image without an inline cache"),
], ids=["other-version", "buildkit-inline", "plain-image"])
def test_an_image_without_a_usable_inline_cache_is_a_warning(tmp_path, busybox_ref, busybox_layout, registry,
                                                              extra, why):
    ctx = one_stage(tmp_path, busybox_ref)
    ref = image_with_config(registry, busybox_layout, tmp_path, f"inline-{len(why)}", extra)
    b = build_from(tmp_path, ctx, ref, why)
    assert ran(b.stderr) == ONE_STAGE_RUNS


# -- a chain of CI runs: each imports the last run's cache and exports its own ----------------------
@pytest.mark.parametrize("mode", ["min", "max"])
def test_a_cache_written_by_a_build_that_imported_one_is_whole(tmp_path, busybox_ref, registry, mode):
    """B takes everything from A's cache (fetching only the layers it needs) and writes its own; C,
    from B's cache alone, still runs nothing and makes the same image."""
    ctx = two_stage(tmp_path, busybox_ref)
    one, two, d = f"{registry}/shared-chain-{mode}:one", f"{registry}/shared-chain-{mode}:two", tmp_path / "dir"
    a = build(ctx, tmp_path / "A", "--cache-to", f"type=registry,ref={one},mode={mode}", "-t",
              f"{registry}/shared-chain-{mode}:a", "--push")
    b = build(ctx, tmp_path / "B", "--cache-from", one, "--cache-to", f"type=registry,ref={two},mode={mode}",
              "--cache-to", f"type=local,dest={d},mode={mode}")
    assert ran(b.stderr) == []
    for i, frm in enumerate((two, f"type=local,src={d}")):
        c = build(ctx, tmp_path / f"C{i}", "--cache-from", frm, "-t", f"{registry}/shared-chain-{mode}:c{i}", "--push",
                  "-o", f"type=local,dest={tmp_path / f'out{i}'}")
        assert ran(c.stderr) == [] and warnings(c.stderr) == []
        assert pushed(c.stderr) == pushed(a.stderr)
        assert files(tmp_path / f"out{i}") == {"out": "HELLO\n", "twice": "HELLO\nHELLO\n"}
    if mode == "max":  # the intermediate layers B never fetched went into its caches all the same
        layers = [registry_cache_document(registry, ref)["layers"] for ref in (one, two)]
        assert len(layers[1]) == len(layers[0]) == 5  # every layer but the base image's


@pytest.mark.parametrize("options", ["oci-mediatypes=false", "compression=zstd", "compression=uncompressed"])
def test_other_media_types_and_compressions(tmp_path, busybox_ref, registry, options):
    ctx = one_stage(tmp_path, busybox_ref)
    ref = f"{registry}/shared-mt:{options.replace('=', '-')}"
    a = build(ctx, tmp_path / "A", "--cache-to", f"type=registry,ref={ref},mode=max,{options}")
    assert ran(a.stderr) == ONE_STAGE_RUNS
    assert ran(build_from(tmp_path, ctx, ref).stderr) == []


def test_an_unreachable_cache_from_is_a_warning(tmp_path, busybox_ref):
    ctx = one_stage(tmp_path, busybox_ref)
    b = build_from(tmp_path, ctx, "127.0.0.1:9/x/cache:c", "--cache-from 127.0.0.1:9/x/cache:c")
    assert ran(b.stderr) == ONE_STAGE_RUNS


def test_a_missing_layer_blob_is_a_warning(tmp_path, busybox_ref, one_stage_cache):
    ctx = one_stage(tmp_path, busybox_ref)
    d = local_cache(tmp_path, one_stage_cache)
    for p in layer_blobs(d):
        p.unlink()
    b = build_from(tmp_path, ctx, f"type=local,src={d}", "building on without it")
    assert ran(b.stderr) == ONE_STAGE_RUNS


# -- credentials: a registry that asks for them, and $DOCKER_CONFIG/config.json that has them ---------
def bcrypt_hash(password: str) -> str | None:
    """A bcrypt hash for docker-registry's htpasswd (crypt(3) makes one; no bcrypt module needed)."""
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # (gone in Python 3.13)
        made = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
    except (ImportError, AttributeError, ValueError, OSError):
        return None
    return made if made and made.startswith("$2") else None


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory):
    from tests.support.registry import BINARY, start_registry, stop_registry

    hashed = bcrypt_hash("s3cret")
    if hashed is None or not shutil.which(BINARY):
        pytest.skip("no bcrypt (crypt(3) without it, no crypt module) or no docker-registry")
    work = tmp_path_factory.mktemp("auth-registry")
    (work / "htpasswd").write_text(f"ci:{hashed}\n")
    auth = f"auth:\n  htpasswd:\n    realm: irctl-test\n    path: {work / 'htpasswd'}\n"
    proc, addr = start_registry(work, extra=auth)
    try:
        yield addr
    finally:
        stop_registry(proc)


def test_credentials_from_docker_config(tmp_path, busybox_ref, auth_registry, monkeypatch):
    import base64

    ctx = one_stage(tmp_path, busybox_ref)
    ref = f"{auth_registry}/private/app:cache"
    assert httpx.get(f"http://{auth_registry}/v2/").status_code == 401  # it does ask
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "nocreds"))
    denied = build(ctx, tmp_path / "A0", "--cache-to", f"type=registry,ref={ref}", code=1)
    assert f"error: --cache-to {ref}: registry {auth_registry}: 401 authentication required" in denied.stderr
    assert f"(no credentials in {tmp_path / 'nocreds' / 'config.json'})" in denied.stderr  # where it looked
    docker = tmp_path / "docker"
    docker.mkdir()
    (docker / "config.json").write_text(json.dumps(
        {"auths": {auth_registry: {"auth": base64.b64encode(b"ci:s3cret").decode()}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(docker))
    a = build(ctx, tmp_path / "A", "--cache-to", f"type=registry,ref={ref},mode=max")
    assert ran(a.stderr) == ONE_STAGE_RUNS and "cache exported" in a.stderr
    assert ran(build_from(tmp_path, ctx, ref).stderr) == []


@pytest.mark.parametrize("kind", ["local", "inline"])
def test_ci_runs_reading_and_writing_one_cache(tmp_path, busybox_ref, registry, kind):
    """The usual CI line: every run reads the cache the last one wrote to the same place (a directory
    the CI system keeps, or the image's own tag) and writes it again, on a fresh machine each time."""
    ctx = two_stage(tmp_path, busybox_ref)
    d, tag = tmp_path / "ci-cache", f"{registry}/shared-ci-{kind}:latest"
    flags = (("--cache-from", f"type=local,src={d}", "--cache-to", f"type=local,dest={d},mode=max")
             if kind == "local" else ("--cache-from", tag, "--cache-to", "type=inline", "-t", tag, "--push"))
    first = build(ctx, tmp_path / "run1", *flags)
    assert ran(first.stderr) == ALL_RUNS
    (ctx / "src.txt").write_text("bye\n")
    second = build(ctx, tmp_path / "run2", *flags)
    assert ran(second.stderr) == ALL_RUNS[1:] if kind == "local" else ALL_RUNS  # inline: min, the first stage by key
    third = build(ctx, tmp_path / "run3", *flags, "-o", f"type=local,dest={tmp_path / 'out'}")
    assert ran(third.stderr) == [] and warnings(third.stderr) == []
    assert files(tmp_path / "out") == {"out": "BYE\n", "twice": "BYE\nBYE\n"}
    if kind == "local":
        assert_layout_valid(d)


def test_a_cache_that_fails_mid_build_leaves_the_next_cache_naming_the_same_blobs(tmp_path, busybox_ref,
                                                                                   one_stage_cache):
    """Two caches naming the same layer blobs (main's and a pull request's); the first lost them:
    it is dropped with a warning and the second one answers, fetching those blobs itself."""
    ctx = one_stage(tmp_path, busybox_ref)
    broken = local_cache(tmp_path, one_stage_cache)
    good = tmp_path / "good"
    shutil.copytree(one_stage_cache, good)
    for p in layer_blobs(broken):
        p.unlink()
    b = build(ctx, tmp_path / "B", "--cache-from", f"type=local,src={broken}", "--cache-from", f"type=local,src={good}",
              "-o", f"type=local,dest={tmp_path / 'out'}")
    assert [w for w in warnings(b.stderr) if str(good) in w] == []
    assert len(warnings(b.stderr)) == 1 and str(broken) in warnings(b.stderr)[0]
    assert ran(b.stderr) == []
    assert files(tmp_path / "out") == {"a": "a\n", "b": "b\n"}


def push_blob(registry: str, repo: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    start = httpx.post(f"http://{registry}/v2/{repo}/blobs/uploads/")
    location = start.headers["Location"]
    location = location if location.startswith("http") else f"http://{registry}{location}"
    done = httpx.put(f"{location}{'&' if '?' in location else '?'}digest={digest}", content=data,
                     headers={"Content-Type": "application/octet-stream"})
    assert done.status_code == 201, done.text
    return digest


def test_buildkits_own_registry_cache_is_a_warning(tmp_path, busybox_ref, registry):
    """What ``buildx --cache-to type=registry,image-manifest=true`` writes: a manifest whose config
    is BuildKit's cache config."""
    ctx = one_stage(tmp_path, busybox_ref)
    repo = "shared-buildkit/cache"
    config, layer = b'{"layers":[],"records":[]}', b"not really a layer"
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.buildkit.cacheconfig.v0",
                           "digest": push_blob(registry, repo, config), "size": len(config)},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                            "digest": push_blob(registry, repo, layer), "size": len(layer)}]}
    put = httpx.put(f"http://{registry}/v2/{repo}/manifests/buildcache", content=json.dumps(manifest),
                    headers={"Content-Type": manifest["mediaType"]})
    assert put.status_code == 201, put.text
    b = build_from(tmp_path, ctx, f"{registry}/{repo}:buildcache", "it is BuildKit's cache")
    assert ran(b.stderr) == ONE_STAGE_RUNS


def test_a_damaged_layer_b_never_needed_leaves_bs_cache_whole_otherwise(tmp_path, busybox_ref, registry):
    """B reads A's cache (mode=max) whose intermediate layers were damaged, needs none of them, and
    writes its own cache: those layers are left out of it with a warning (their results go in by
    key); B succeeds, and a build from B's cache still runs nothing."""
    ctx = two_stage(tmp_path, busybox_ref)
    d1, d2, ref = tmp_path / "d1", tmp_path / "d2", f"{registry}/shared-damaged:b"
    build(ctx, tmp_path / "A", "--cache-to", f"type=local,dest={d1},mode=max")
    _, doc = local_manifest(d1)
    target = set(image_layers_of_cache_targets(doc, tmp_path / "A", "twice"))
    damaged = [p for p in layer_blobs(d1) if "sha256:" + p.name not in target]
    assert len(damaged) == 3
    for p in damaged:
        p.write_bytes(p.read_bytes()[::-1])
    b = build(ctx, tmp_path / "B", "--cache-from", f"type=local,src={d1}", "--cache-to",
              f"type=local,dest={d2},mode=max", "--cache-to", f"type=registry,ref={ref},mode=max")
    assert ran(b.stderr) == []
    left_out = [w for w in warnings(b.stderr) if "its results go in by key" in w]
    assert len(left_out) == 6, b.stderr  # three layers, for each of the two caches
    assert len(local_manifest(d2)[1]["layers"]) == 2
    for i, frm in enumerate((f"type=local,src={d2}", ref)):
        c = build(ctx, tmp_path / f"C{i}", "--cache-from", frm, "-o", f"type=local,dest={tmp_path / f'out{i}'}")
        assert ran(c.stderr) == [] and warnings(c.stderr) == []
        assert files(tmp_path / f"out{i}") == {"out": "HELLO\n", "twice": "HELLO\nHELLO\n"}


def test_results_with_too_few_outputs_are_not_hits(tmp_path, busybox_ref, one_stage_cache):
    ctx = one_stage(tmp_path, busybox_ref)
    d = local_cache(tmp_path, one_stage_cache)
    rewrite_document(d, lambda doc: [r.update(outputs=[]) for r in doc["records"]])
    b = build_from(tmp_path, ctx, f"type=local,src={d}")
    assert ran(b.stderr) == ONE_STAGE_RUNS
