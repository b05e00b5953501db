"""buildx's flags that shape the build: --label, -f -, --pull's forms, --check, the parsers of
--add-host/--shm-size/--ulimit (what they do inside a RUN: tests/cli/test_run_options.py), and the
one-line answer to an option that does not exist, on any command."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from ir import ops
from irctl import buildx_flags as bx
from irctl.errors import UserError
from tests.support.cli import irctl, irctl_argv, write


def _config(layout: Path) -> dict:
    """The image config of the single image in an OCI layout."""
    index = json.loads((layout / "index.json").read_text())
    blob = lambda d: json.loads((layout / "blobs" / "sha256" / d["digest"].split(":")[1]).read_text())  # noqa: E731
    return blob(blob(index["manifests"][0])["config"])


# -- parsing, as docker's CLI parses ----------------------------------------------------------------


def test_shm_size_takes_dockers_binary_units():
    assert [bx.shm_size(v) for v in ("", "0", "100", "64m", "64M", "64mb", "64MiB", "1g", "1.5g", "2 k")] == [
        0, 0, 100, 64 << 20, 64 << 20, 64 << 20, 64 << 20, 1 << 30, 3 << 29, 2048]
    for bad in ("64x", "-1", "m", "1gg", "64 m b"):
        with pytest.raises(UserError, match="invalid size"):
            bx.shm_size(bad)
    with pytest.raises(UserError, match="larger than 64g"):
        bx.shm_size("65g")


def test_ulimits_are_sorted_by_name_hard_defaults_to_soft_and_the_last_wins():
    got = bx.ulimits(["nproc=100", "nofile=1024:4096", "core=-1", "nproc=50:60"])
    assert got == (ops.Ulimit("core", -1, -1), ops.Ulimit("nofile", 1024, 4096), ops.Ulimit("nproc", 50, 60))
    for bad, says in (("nofile", "NAME=SOFT"), ("as=1", "invalid ulimit type 'as'"), ("nofle=1", "did you mean nofile"),
                      ("nofile=1:2:3", "too many"), ("nofile=x", "integers"), ("nofile=5:2", "soft limit"),
                      ("nofile=-1:10", "soft limit"), ("nofile=-2", r"-1 \(unlimited\) or 0")):
        with pytest.raises(UserError, match=says):
            bx.ulimits([bad])


def test_add_host_takes_host_colon_ip_host_equals_ip_and_bracketed_ipv6():
    got = bx.extra_hosts(["db:10.0.0.7", "cache=10.0.0.8", "v6:::1", "v6b=[fd00:0::7]", "db:10.0.0.9"])
    assert got == (ops.HostIP("db", "10.0.0.7"), ops.HostIP("cache", "10.0.0.8"), ops.HostIP("v6", "::1"),
                   ops.HostIP("v6b", "fd00::7"), ops.HostIP("db", "10.0.0.9"))
    for bad, says in (("db", "invalid IP"), ("db:300.1.1.1", "invalid IP"), ("a b:1.2.3.4", "invalid host name"),
                      ("a\n1.1.1.1 evil:1.2.3.4", "invalid host name"), (":1.2.3.4", "invalid host name"),
                      ("db:host-gateway", "host-gateway")):
        with pytest.raises(UserError, match=says):
            bx.extra_hosts([bad])


def test_add_host_and_allow_take_comma_separated_lists_as_buildx():
    """buildx declares both as string slices: `--add-host a:1.2.3.4,b:5.6.7.8` is two entries."""
    from irctl import options as opt

    assert bx.extra_hosts(["a:1.2.3.4,b=5.6.7.8", "c:::1"]) == (
        ops.HostIP("a", "1.2.3.4"), ops.HostIP("b", "5.6.7.8"), ops.HostIP("c", "::1"))
    assert opt.entitlements(["network.host,security.insecure"]) == opt.entitlements(
        ["network.host", "security.insecure"]) != opt.entitlements(["network.host"])


def test_pull_takes_buildx_and_podman_spellings():
    assert bx.pull(False, None) is False and bx.pull(True, None) is True
    assert [bx.pull(False, w) for w in ("true", "always", "newer", "false", "missing", "ALWAYS")] == [
        True, True, True, False, False, True]
    with pytest.raises(UserError, match="never"):
        bx.pull(False, "never")
    with pytest.raises(UserError, match="expected true, false"):
        bx.pull(False, "sometimes")


def test_only_build_and_compile_pull_value_is_respelled_and_nothing_after_double_dash():
    from irctl.usage import spell_argv

    assert spell_argv(["build", "--pull=always", "."]) == ["build", "--pull-policy=always", "."]
    assert spell_argv(["compile", "--pull=true", "x"]) == ["compile", "--pull-policy=true", "x"]
    assert spell_argv(["solve", "--pull=true", "x"]) == ["solve", "--pull=true", "x"]
    assert spell_argv(["build", "--", "--pull=x"]) == ["build", "--", "--pull=x"]
    assert spell_argv(["build", "--rm", "-m", "1g", "-t", "x", "--", "--rm"]) == ["build", "-t", "x", "--", "--rm"]
    assert spell_argv(["compile", "--rm"]) == ["compile", "--rm"]


def test_labels_key_alone_is_empty_and_a_later_one_wins():
    assert bx.labels(["a=1", "b", "a=2", "c=x=y"]) == {"a": "2", "b": "", "c": "x=y"}
    with pytest.raises(UserError):
        bx.labels(["=v"])


# -- the command line ------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, line", [
    (["build", "--lable", "a=b", "."], "irctl build: no such option --lable (did you mean --label?)"),
    (["build", "--add-hots", "a:1.2.3.4", "."], "irctl build: no such option --add-hots (did you mean --add-host?)"),
    (["cache", "prune", "--al"], "irctl cache prune: no such option --al (did you mean --all?)"),
    (["--lable"], "irctl: no such option --lable (see python -m irctl --help)"),
])
def test_an_unknown_option_is_one_line_naming_the_closest(argv, line):
    r = irctl(*argv)
    assert r.code == 2
    assert r.stderr.splitlines() == [line.replace("irctl", "python -m irctl", 1)], r.stderr


@pytest.mark.parametrize("argv, line", [
    (["build", "a", "b"], "irctl build: got unexpected extra argument(s) (b)"),
    (["build", "-t", "x", "--progress"], "irctl build: option '--progress' requires an argument"),
    (["build", "--tag"], "irctl build: option '--tag' requires an argument"),
    (["build", "--jobs", "x", "."], "irctl build: invalid value for '--jobs' / '-j': 'x' is not a valid int"),
])
def test_any_other_usage_error_is_one_line_too(argv, line):
    """Click's other usage errors (a second context, a missing value) are one line as well, not a box."""
    r = irctl(*argv)
    assert r.code == 2
    assert r.stderr.splitlines() == [line.replace("irctl", "python -m irctl", 1)], r.stderr


@pytest.mark.parametrize("args, says", [
    (["--ulimit", "nofle=1"], "error: --ulimit nofle=1: invalid ulimit type 'nofle' (did you mean nofile?)"),
    (["--add-host", "db:host-gateway"], "error: --add-host db:host-gateway: host-gateway"),
    (["--add-host", "a\n6.6.6.6 bank:1.2.3.4"], "error: --add-host 'a\\n6.6.6.6 bank:1.2.3.4': invalid host name"),
    (["--shm-size", "1x"], "error: --shm-size 1x: invalid size"),
    (["--pull=never"], "error: --pull=never: irctl cannot promise"),
])
def test_a_bad_flag_value_is_one_line(tmp_path, args, says):
    write(tmp_path, {"Dockerfile": "FROM scratch\n"})
    r = irctl("build", *args, tmp_path)
    assert r.code == 1 and len(r.stderr.splitlines()) == 1 and r.stderr.startswith(says), r.stderr


def test_a_bad_progress_or_jobs_value_is_refused_in_one_line_even_when_the_build_is_cached(tmp_path, cache_env):
    """The cached no-op path (irctl.fastpath) must not answer a command line the ordinary path refuses."""
    write(tmp_path, {"Dockerfile": "FROM scratch\nCOPY a /a\n", "a": "x"})
    says = "error: --progress 'bogus': expected one of auto, tty, plain, json, quiet"
    for cached in (False, True):
        r = irctl("build", "--progress=bogus", ".", cwd=tmp_path, env=cache_env)
        assert (r.code, r.stderr.splitlines()) == (1, [says]), (cached, r.stderr)
        r = irctl("build", "--jobs", "x", ".", cwd=tmp_path, env=cache_env)
        assert r.code == 2 and "'x' is not a valid int" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
        r = irctl("build", "--jobs", "-3", ".", cwd=tmp_path, env=cache_env)
        assert (r.code, r.stderr.splitlines()) == (1, ["error: --jobs -3: expected a number of steps, or 0 for no "
                                                       "limit"]), r.stderr
        assert irctl("build", ".", cwd=tmp_path, env=cache_env).code == 0


def test_docker_builds_legacy_flags_are_ignored_with_a_warning_as_buildx(tmp_path, cache_env):
    """buildx accepts `docker build`'s flags BuildKit has no use for (hidden): a script passing
    `--rm` or `-m 1g` keeps working, and irctl says it ignored them."""
    write(tmp_path, {"Dockerfile": "FROM scratch\nCOPY a /a\n", "a": "x"})
    r = irctl("build", "--progress", "plain", "--rm", "--force-rm=true", "-m", "1g", "--memory-swap=-1", "-c512",
              "--cpu-shares", "2", "--compress", "--isolation", "default", "--squash", "--security-opt", "seccomp=x",
              "--cpuset-cpus", "0-3", ".", cwd=tmp_path, env=cache_env)
    assert r.code == 0 and "[1/1] COPY a /a" in r.stderr, r.stderr
    warned = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert warned == [f"warning: {f} is ignored (docker build's flag, accepted as buildx does)" for f in (
        "--rm", "--force-rm", "-m", "--memory-swap", "-c", "--cpu-shares", "--compress", "--isolation", "--squash",
        "--security-opt", "--cpuset-cpus")], r.stderr


@pytest.mark.parametrize("context, says", [
    ("https://github.com/docker/buildx.git", "build context https://github.com/docker/buildx.git: a remote context "
                                             "(git or https URL) is not fetched; clone it and pass the directory"),
    ("git@github.com:docker/buildx.git", "build context git@github.com:docker/buildx.git: a remote context "
                                         "(git or https URL) is not fetched; clone it and pass the directory"),
    ("-", "build context -: a context on stdin is not read; pass a directory (-f - reads the build file from stdin)"),
    ("nothere", "build context nothere is not a directory"),
])
def test_a_context_buildx_would_fetch_or_read_from_stdin_is_refused_saying_so(tmp_path, context, says):
    r = irctl("build", context, cwd=tmp_path)
    assert r.code == 1 and r.stderr.splitlines() == [f"error: {says}"], r.stderr


@pytest.mark.parametrize("command", ["build", "compile"])
def test_help_at_80_columns_cuts_no_option_short(command):
    r = irctl(command, "--help", env={"COLUMNS": "80", "TERM": "dumb"})
    assert r.code == 0 and not re.search(r"…\s*│", r.stdout), r.stdout  # rich cuts what it cannot wrap
    assert "oci-layout://PATH" in r.stdout.replace("│", "").replace("\n", "").replace(" ", ""), r.stdout


def test_debug_build_takes_builds_spellings_and_one_line_errors(tmp_path, cache_env):
    """`irctl debug build …` is `irctl build --on-error=shell …`: the same respelling and usage errors."""
    write(tmp_path, {"Dockerfile": "FROM scratch\nCOPY a /a\n", "a": "x"})
    r = irctl("debug", "build", "--lable", "x", ".", cwd=tmp_path, env=cache_env)
    assert r.code == 2 and r.stderr.splitlines() == [
        "irctl debug build: no such option --lable (did you mean --label?)"], r.stderr
    r = irctl("debug", "build", "--progress", "plain", "--pull=always", "--rm", ".", cwd=tmp_path, env=cache_env)
    assert r.stderr.splitlines() == ["warning: --rm is ignored (docker build's flag, accepted as buildx does)",
                                     "error: --on-error=shell needs a terminal on stdin for the shell (run it from "
                                     "one, or leave the option out)"], r.stderr  # parsed: only the shell is missing


def test_pull_is_still_a_flag_before_the_context(tmp_path, cache_env):
    """`--pull .`: buildx's --pull takes no value, so `.` is the context (not a pull policy)."""
    write(tmp_path, {"Dockerfile": "FROM scratch\nCOPY a /a\n", "a": "x"})
    for args in (["--pull"], ["--pull=true"], ["--pull=missing"], ["--pull=always"]):
        r = irctl("build", "--progress", "plain", *args, ".", cwd=tmp_path, env=cache_env)
        assert r.code == 0 and "COPY a /a" in r.stderr, (args, r.stderr)


def test_pull_always_asks_again_and_missing_reuses(tmp_path, busybox_ref, registry, cache_env):
    """A tag moved to another image: --pull=missing (the default) keeps the digest resolved before,
    --pull=always (and bare --pull) resolves the tag again, as podman's and buildx's say."""
    moving = f"{registry}/moving-flags:latest"
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
                    f"docker://{busybox_ref}", f"docker://{moving}"], check=True, capture_output=True)
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {moving}\nRUN echo hi > /hi\n"})
    first = irctl("build", "--progress", "plain", ctx, env=cache_env)
    assert first.code == 0, first.stderr
    other = write(tmp_path / "other", {"Dockerfile": f"FROM {busybox_ref}\nRUN echo moved > /moved\n"})
    r = irctl("build", "--progress", "quiet", "-t", moving, "--push", "--insecure-registry", registry, other,
              env=cache_env)
    assert r.code == 0, r.stderr

    def base_digest(*args: str) -> str:
        r = irctl("build", "--progress", "plain", *args, ctx, env=cache_env)
        assert r.code == 0, r.stderr
        return next(line.split("@")[1] for line in r.stderr.splitlines() if f"FROM {moving}" in line)

    before = next(line.split("@")[1] for line in first.stderr.splitlines() if f"FROM {moving}" in line)
    assert base_digest("--pull=missing") == before
    assert base_digest("--pull=always") != before
    assert base_digest("--pull") != before


# -- --label, -f -, --check ------------------------------------------------------------------------


def test_label_sets_the_image_config_over_the_dockerfiles_label(tmp_path, busybox_ref, cache_env):
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\nLABEL tier=build keep=1\n"})
    out = tmp_path / "img"
    r = irctl("build", "--progress", "quiet", "--label", "tier=release", "--label", "org.example.sha=abc",
              "--output", f"type=oci,dest={out},tar=false", ctx, env=cache_env)
    assert r.code == 0, r.stderr
    labels = _config(out)["config"]["Labels"]
    assert labels == {**labels, "tier": "release", "keep": "1", "org.example.sha": "abc"}
    history = [h.get("created_by", "") for h in _config(out)["history"]]
    assert not any("release" in h for h in history)  # BuildKit adds no history entry for them


def _build_stdin(data: bytes, *args, env: dict, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(irctl_argv("build", "-f", "-", *args), input=data, capture_output=True, env=env,
                          cwd=cwd, timeout=120)


def test_build_file_from_stdin(tmp_path, busybox_ref, cache_env):
    import os

    env = {**os.environ, **cache_env}
    ctx = write(tmp_path / "ctx", {"a.txt": "from the context\n", "Dockerfile": "FROM scratch\nthis is not used\n"})
    out = tmp_path / "out"
    p = _build_stdin(f"FROM {busybox_ref}\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt\n".encode(),
                     "--progress", "plain", "--output", f"type=local,dest={out}", ctx, env=env)
    assert p.returncode == 0, p.stderr.decode()
    assert (out / "b.txt").read_text() == "from the context\n"
    p = _build_stdin(b"FROM scratch\nCOPY --frm=x a /b\n", ctx, env=env)
    assert p.returncode != 0 and b"Dockerfile:2" in p.stderr and b"Traceback" not in p.stderr, p.stderr.decode()
    p = _build_stdin(b"#" * (16 << 20) + b"x", ctx, env=env)
    assert p.returncode == 1 and p.stderr.decode().splitlines() == [
        "error: -f -: the build file on stdin is larger than 16 MiB"], p.stderr.decode()


def test_check_prints_the_warnings_like_buildx_and_builds_nothing(tmp_path, busybox_ref, cache_env):
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref} as base\nRUN false\nCMD echo hi\n"})
    r = irctl("build", "--check", ctx, env=cache_env)
    assert r.code == 1, r.stderr
    assert r.stdout == (
        "Check complete, 2 warnings have been found!\n"
        "\n"
        "WARNING: FromAsCasing - https://docs.docker.com/go/dockerfile/rule/from-as-casing/\n"
        "'as' and 'FROM' keywords' casing do not match\n"
        "Dockerfile:1\n"
        "--------------------\n"
        f"   1 | >>> FROM {busybox_ref} as base\n"
        "   2 |     RUN false\n"
        "   3 |     CMD echo hi\n"
        "--------------------\n"
        "\n"
        "WARNING: JSONArgsRecommended - https://docs.docker.com/go/dockerfile/rule/json-args-recommended/\n"
        "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals\n"
        "Dockerfile:3\n"
        "--------------------\n"
        f"   1 |     FROM {busybox_ref} as base\n"
        "   2 |     RUN false\n"
        "   3 | >>> CMD echo hi\n"
        "--------------------\n"), r.stdout
    assert "#1" not in r.stderr and "warning:" not in r.stderr  # no solve (RUN false never ran), said once
    write(ctx, {"Dockerfile": f"FROM {busybox_ref}\nRUN false\n"})
    r = irctl("build", "--check", ctx, env=cache_env)
    assert (r.code, r.stdout) == (0, "Check complete, no warnings found.\n"), r.stderr


def test_the_flags_are_inputs_of_the_remembered_build_and_graph(tmp_path, busybox_ref, cache_env):
    """A build remembered without --add-host is not the answer with it (nor the other way round):
    the no-op fast path and the remembered compile are keyed by them too."""
    from tests.support.cli import FAST

    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\nRUN cat /etc/hosts\n"})
    plain = irctl("build", "--progress", "plain", ctx, env=cache_env)
    assert plain.code == 0 and "10.0.0.7" not in plain.stderr, plain.stderr
    shaped = irctl("build", "--progress", "plain", "--add-host", "db:10.0.0.7", ctx, env=cache_env)
    assert shaped.code == 0 and "10.0.0.7\tdb" in shaped.stderr, shaped.stderr
    again = irctl("build", "--progress", "plain", ctx, env=cache_env)
    assert again.code == 0 and FAST in again.stderr, again.stderr
    other = irctl("build", "--progress", "plain", "--add-host", "db:10.0.0.8", ctx, env=cache_env)
    assert other.code == 0 and "10.0.0.8\tdb" in other.stderr, other.stderr


def test_compile_takes_the_same_flags_and_writes_them_into_the_graph(tmp_path, busybox_ref, cache_env):
    from ir.codec import load_document

    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\nRUN true\nRUN false\n"})
    out = tmp_path / "g.ir"
    r = irctl("compile", "-o", out, "--add-host", "db:10.0.0.7", "--shm-size", "1g", "--ulimit", "nofile=10",
              "--label", "a=b", "--pull=always", ctx, env=cache_env)
    assert r.code == 0, r.stderr
    doc = load_document(out.read_bytes())
    execs = [op.exec for op in doc.ops.values() if op.exec is not None]
    assert len(execs) == 2 and all(e.extra_hosts == (ops.HostIP("db", "10.0.0.7"),) and e.shm_size == 1 << 30
                                   and e.ulimits == (ops.Ulimit("nofile", 10, 10),) for e in execs)
    assert doc.ops[doc.roots["default"].op].image.config.labels == {"a": "b"}
    assert {"exec.extra_hosts", "exec.shm_size", "exec.ulimits"} <= set(doc.features)


# -- an output on stdout ----------------------------------------------------------------------------


@pytest.mark.parametrize("output, member", [
    ("-", "a"),  # buildx: a bare `-` is the tar exporter on stdout
    ("type=tar", "a"),
    ("type=tar,dest=-", "a"),
    ("type=oci,dest=-", "index.json"),
    ("type=oci", "oci-layout"),
    ("type=docker,dest=-", "manifest.json"),
])
def test_an_output_to_dash_or_without_dest_is_a_tar_on_stdout(tmp_path, cache_env, output, member):
    import io
    import os
    import tarfile

    ctx = write(tmp_path / "ctx", {"Dockerfile": "FROM scratch\nCOPY a /a\n", "a": "x"})
    proc = subprocess.run(irctl_argv("build", "-o", output, "ctx"), cwd=tmp_path, capture_output=True,
                          env={**os.environ, **cache_env}, stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        assert member in tar.getnames(), tar.getnames()
        if member == "a":
            assert tar.extractfile("a").read() == b"x"
    assert proc.stderr.decode().rstrip().endswith(" to stdout"), proc.stderr.decode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "ctx"]  # no file or directory named `-`
    assert ctx.exists()


@pytest.mark.parametrize("outputs, says", [
    (["type=local,dest=-"], "--output 'type=local,dest=-': type=local writes a directory; type=tar writes to stdout"),
    (["type=oci,tar=false"], "--output 'type=oci,tar=false': tar=false writes a directory: it needs dest=DIR"),
    (["-", "type=oci"], "--output: only one output can be written to stdout (dest=-)"),
    (["-", "-q"], "--output -: stdout already carries -q's image ID; give dest=FILE"),
    (["type=image,name=x"], "--output 'type=image,name=x': irctl keeps no image store: push=true pushes the "
                             "image, --load puts it into Docker or podman"),
])
def test_an_output_irctl_cannot_write_is_refused_before_the_build(tmp_path, outputs, says):
    write(tmp_path, {"Dockerfile": "FROM scratch\n"})
    r = irctl("build", *[a for o in outputs for a in ((o,) if o == "-q" else ("-o", o))], tmp_path)
    assert r.code == 1 and r.stderr.splitlines() == [f"error: {says}"], r.stderr


def test_solve_keeps_stdout_for_its_results(tmp_path):
    r = irctl("solve", tmp_path / "g.ir", "-o", "type=tar")
    assert r.code == 1 and r.stderr.splitlines() == [
        "error: --output type=tar: stdout already carries irctl solve's results; give dest=FILE"], r.stderr
