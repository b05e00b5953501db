"""Several platforms and several targets in one ``irctl build``: one graph, one solve, shared steps
once; arm64 steps run under QEMU (binfmt_misc) and produce a real arm64 image."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support.arm64 import make_index_layout, multiplatform_dockerfile, push_index
from tests.support.cli import FAST, irctl, steps_ended, write

pytestmark = pytest.mark.e2e


def test_amd64_and_arm64_in_one_build_share_the_build_platform_stage(tmp_path, multiarch_ref, cache_env):
    ctx = write(tmp_path / "ctx", {"Dockerfile": multiplatform_dockerfile(multiarch_ref)})
    r = irctl("build", ctx, "--progress", "plain", "--platform", "linux/amd64,linux/arm64", env=cache_env)
    assert r.code == 0, r.stderr
    steps = steps_ended(r.stderr)
    tools = [d for d in steps if "RUN echo tools-ran" in d]
    assert tools == ["[linux/amd64 tools 2/2] RUN echo tools-ran > /tools.txt && uname -m > /build-arch.txt"]
    assert steps[tools[0]] == "DONE"  # once, for both platforms
    assert steps['[linux/arm64 stage-1 3/3] RUN echo "arm64 linux/arm64 $(uname -m)" > /arch.txt'] == "DONE"
    assert steps['[linux/amd64 stage-1 3/3] RUN echo "amd64 linux/amd64 $(uname -m)" > /arch.txt'] == "DONE"
    again = irctl("build", ctx, "--platform", "linux/amd64", "--platform", "linux/arm64", env=cache_env)
    assert again.code == 0 and FAST in again.stderr, again.stderr  # the no-op path knows the platforms

    # each platform's image, exported on its own: every step is the one the two-platform build ran
    for platform, machine in (("linux/arm64", "aarch64"), ("linux/amd64", "x86_64")):
        out = tmp_path / platform.replace("/", "_")
        r = irctl("build", ctx, "--progress", "plain", "--platform", platform, "--output",
                  f"type=local,dest={out}", env=cache_env)
        assert r.code == 0, r.stderr
        assert set(steps_ended(r.stderr).values()) == {"CACHED"}, r.stderr
        arch = platform.split("/")[1]
        assert (out / "arch.txt").read_text() == f"{arch} {platform} {machine}\n"
        assert (out / "build-arch.txt").read_text() == "x86_64\n"  # BUILDPLATFORM: the host
        machine_field = (out / "bin/busybox").read_bytes()[18:20]  # ELF e_machine: the binary's architecture
        assert int.from_bytes(machine_field, "little") == {"arm64": 0xB7, "amd64": 0x3E}[arch]
        # the image's own busybox, run in it: under QEMU for arm64 (the F flag: no interpreter inside)
        uname = subprocess.run(["chroot", out, "/bin/uname", "-m"], capture_output=True, text=True, timeout=60)
        assert uname.stdout == f"{machine}\n", uname.stderr


def test_compile_names_a_root_per_platform_and_solve_builds_them_all(tmp_path, multiarch_ref, cache_env):
    ctx = write(tmp_path / "ctx", {"Dockerfile": multiplatform_dockerfile(multiarch_ref)})
    graph = tmp_path / "g.ir"
    r = irctl("compile", ctx, "-o", graph, "--platform", "linux/arm64", "--platform", "linux/amd64,linux/arm64",
              env=cache_env)
    assert r.code == 0, r.stderr
    assert "roots default@linux/amd64, default@linux/arm64" in r.stderr
    r = irctl("solve", graph, "--progress", "plain", env=cache_env)
    assert r.code == 0, r.stderr
    assert [line.split('"identity"')[0] for line in r.stdout.splitlines()] == [
        '{"target": "default@linux/amd64", ', '{"target": "default@linux/arm64", ']


def test_several_targets_share_their_base_stage(tmp_path, multiarch_ref, cache_env):
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"""FROM {multiarch_ref} AS base
RUN echo base > /base.txt
FROM base AS a
RUN echo a > /a.txt
FROM base AS b
RUN echo b > /b.txt
"""})
    out = tmp_path / "out"
    r = irctl("build", ctx, "--progress", "plain", "--target", "a", "--target", "b", "--output",
              f"type=local,dest={out}/{{target}}", env=cache_env)
    assert r.code == 0, r.stderr
    assert steps_ended(r.stderr)["[base 2/2] RUN echo base > /base.txt"] == "DONE"
    assert sorted(p.name for p in out.iterdir()) == ["a", "b"]
    assert (out / "a" / "a.txt").is_file() and not (out / "a" / "b.txt").exists()
    assert (out / "b" / "b.txt").is_file() and (out / "b" / "base.txt").is_file()

    r = irctl("build", ctx, "--target", "a,b", "--output", f"type=local,dest={out}/same", env=cache_env)
    assert r.code == 1 and "built in" not in r.stderr  # refused before building anything
    assert r.stderr.strip().splitlines() == [
        f"error: --output dest= '{out}/same' would be overwritten by each target: put {{target}} in it "
        "(replaced by the target's name)"]

    graph = tmp_path / "g.ir"
    r = irctl("compile", ctx, "-o", graph, "--target", "a", "--target", "b", env=cache_env)
    assert r.code == 0 and "roots a, b" in r.stderr, r.stderr
    r = irctl("solve", graph, env=cache_env)
    assert r.code == 1 and "several targets (a, b): name the roots to build" in r.stderr


def test_a_base_index_without_the_platform_is_an_error(tmp_path, registry, busybox_layout, cache_env):
    ref = push_index(make_index_layout(tmp_path / "index", {"linux/amd64": busybox_layout}),
                     f"{registry}/busybox-amd64-only:latest")
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {ref}\nRUN uname -m\n"})
    r = irctl("build", ctx, "--platform", "linux/amd64,linux/arm64", env=cache_env)
    assert r.code == 1
    first = r.stderr.splitlines()[0]
    assert first.endswith("busybox-amd64-only:latest: no image for platform linux/arm64 (available: linux/amd64)")
    assert first.startswith("Dockerfile:1:1: ")


@pytest.mark.parametrize("value, says", [
    ("linux/amd64,", "--platform 'linux/amd64,': empty platform"),
    ("linux/", '--platform \'linux/\': "linux/": unknown operating system or architecture: invalid argument'),
    ("linux/arm+64", '--platform \'linux/arm+64\': "linux/arm+64": unknown operating system or architecture: '
                     'invalid argument'),  # a platform's parts are names (ir.ops.PLATFORM_PART)
])
def test_a_bad_platform_is_one_line(tmp_path, value, says, cache_env):
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM scratch\n"})
    r = irctl("build", ctx, "--platform", value, env=cache_env)
    assert r.code == 1 and r.stderr.strip().splitlines() == [f"error: {says}"]


def test_a_step_this_host_cannot_run_is_refused_before_it_runs(tmp_path, busybox_ref, cache_env):
    """The exec handler asks ``backend.runtime.emulation`` first (its binfmt_misc cases are unit-tested
    in tests/backend/test_emulation.py); a single-manifest base is taken with BuildKit's warning."""
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\nRUN echo ran > /ran\n"})
    r = irctl("build", ctx, "--progress", "plain", "--platform", "linux/sparc64", env=cache_env)
    assert r.code == 1
    assert 'was pulled with platform "linux/amd64", expected "linux/sparc64"' in r.stderr
    assert ("[2/2] RUN echo ran > /ran: the step's platform is linux/sparc64: no emulation of sparc64 is known "
            "to irctl\nDockerfile:2\n") in r.stderr
    assert "#2 ERROR" in r.stderr and "#2 DONE" not in r.stderr


def test_two_platforms_export_one_index_that_skopeo_umoci_and_a_registry_read(tmp_path, multiarch_ref, registry,
                                                                               cache_env):
    """The whole path: one build, an OCI index of a real amd64 and a real arm64 image (checked with
    skopeo and umoci, per platform), the same index pushed and pulled back by platform, and the arm64
    image's own programs run under QEMU from the unpacked bundle."""
    ctx = write(tmp_path / "ctx", {"Dockerfile": multiplatform_dockerfile(multiarch_ref)})
    layout, ref = tmp_path / "layout", f"{registry}/multi/app:1"
    r = irctl("build", ctx, "--platform", "linux/amd64,linux/arm64", "-t", ref, "--push", "--output",
              f"type=oci,tar=false,dest={layout}", env=cache_env)
    assert r.code == 0, r.stderr
    index = json.loads(subprocess.run(["skopeo", "inspect", "--raw", f"oci:{layout}:1"], check=True,
                                      capture_output=True).stdout)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [(m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"]] == [
        ("linux", "amd64"), ("linux", "arm64")]
    pushed = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"], check=True,
                            capture_output=True).stdout
    assert json.loads(pushed) == index  # the same index, byte for byte as skopeo re-reads it
    for arch, machine in (("amd64", "x86_64"), ("arm64", "aarch64")):
        one = tmp_path / f"one-{arch}"
        subprocess.run(["skopeo", "copy", "--quiet", "--override-arch", arch, "--src-tls-verify=false",
                        f"docker://{ref}", f"oci:{one}:img"], check=True, capture_output=True)
        bundle = tmp_path / f"bundle-{arch}"
        subprocess.run(["umoci", "unpack", "--image", f"{one}:img", bundle], check=True, capture_output=True)
        config = json.loads(subprocess.run(["skopeo", "inspect", "--config", f"oci:{one}:img"], check=True,
                                           capture_output=True).stdout)
        assert config["architecture"] == arch
        rootfs = bundle / "rootfs"
        assert (rootfs / "arch.txt").read_text() == f"{arch} linux/{arch} {machine}\n"
        uname = subprocess.run(["chroot", rootfs, "/bin/uname", "-m"], capture_output=True, text=True, timeout=60)
        assert uname.stdout == f"{machine}\n", uname.stderr


@pytest.mark.parametrize("flags", [["--load"], ["--output", "type=docker,dest=x.tar"]])
def test_a_docker_output_of_several_platforms_is_refused_before_building(tmp_path, flags, cache_env):
    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM scratch\nCOPY Dockerfile /\n"})
    r = irctl("build", ctx, "--progress", "plain", "--platform", "linux/amd64,linux/arm64", *flags, env=cache_env)
    assert r.code == 1
    assert r.stderr.strip() == ("error: --output type=docker: docker exporter does not currently support exporting "
                                "manifest lists (2 platforms); push them, or --output type=oci,dest=… for an index")
@pytest.mark.parametrize("command", ["build", "compile"])
def test_help_shows_the_flags(command):
    r = irctl(command, "--help")
    assert r.code == 0, r.stderr
    assert "--platform" in r.stdout and "os/arch/variant" in r.stdout  # (rich once took `[/variant]` for markup)


def test_two_spellings_of_one_platform_are_one_root(tmp_path, cache_env):
    """buildx normalises ``--platform`` as containerd does: ``linux/arm64/v8`` is ``linux/arm64``."""
    from ir.codec import load_document

    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM scratch\nARG TARGETVARIANT\nCOPY Dockerfile /\n"})
    out = tmp_path / "g.ir"
    r = irctl("compile", ctx, "-o", out, "--platform", "linux/arm64,linux/arm64/v8,linux/amd64", env=cache_env)
    assert r.code == 0, r.stderr
    assert sorted(load_document(out.read_bytes()).roots) == ["default@linux/amd64", "default@linux/arm64"]
