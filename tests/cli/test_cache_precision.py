"""``irctl build`` end to end: a RUN step is keyed by exactly what its mounts select (issue 12).

Each build passes ``--output`` so it goes through the solver (the no-op fast path would answer
before any key is computed); ``ran`` lists the steps that executed rather than hit the cache.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.cli import irctl, write

pytestmark = pytest.mark.e2e


def ran(ctx: Path, tmp_path: Path, env: dict, *args: str) -> list[str]:
    r = irctl("build", ctx, "--progress", "json", "--output", f"type=local,dest={tmp_path / 'out'}", *args, env=env)
    assert r.code == 0, r.stderr
    steps = [e["description"].split("] ", 1)[-1] for e in r.events() if e["kind"] == "finished"]
    return [s for s in steps if s.startswith("RUN")]


def test_run_with_a_context_bind_mount_is_keyed_by_the_mounted_file_only(tmp_path, busybox_ref, cache_env):
    # (the steps write nothing, so one re-running leaves the next one's rootfs as it was)
    deps = "RUN --mount=type=bind,source=requirements.txt,target=/tmp/r.txt cat /tmp/r.txt"
    listing = "RUN --mount=type=bind,source=sub,target=/s,rw ls -ln /s"
    ctx = write(tmp_path / "ctx", {
        "Dockerfile": f"FROM {busybox_ref}\n{deps}\n{listing}\n",
        "requirements.txt": "flask\n", "app.py": "print(1)\n", "sub/x": "x\n", "sub/ignored.log": "1\n",
        ".dockerignore": "sub/*.log\n"})
    assert ran(ctx, tmp_path, cache_env) == [deps, listing]
    (ctx / "app.py").write_text("print(2)\n")  # an unrelated file: nothing re-runs
    (ctx / "new.txt").write_text("new\n")
    assert ran(ctx, tmp_path, cache_env) == []
    (ctx / "sub" / "ignored.log").write_text("2\n")  # below the mounted dir, but .dockerignore'd
    assert ran(ctx, tmp_path, cache_env) == []
    (ctx / "sub" / "y").write_text("y\n")  # a new file in the mounted subdirectory
    assert ran(ctx, tmp_path, cache_env) == [listing]
    (ctx / "requirements.txt").write_text("flask\nrequests\n")  # the mounted file itself
    assert ran(ctx, tmp_path, cache_env) == [deps]
    os.chmod(ctx / "requirements.txt", 0o600)  # its mode is visible to the step too
    assert ran(ctx, tmp_path, cache_env) == [deps]


def test_run_with_a_stage_bind_mount_is_keyed_by_the_selection_through_planted_links(tmp_path, busybox_ref,
                                                                                     cache_env):
    # the build stage plants /out/link -> /data/real (absolute: resolved inside the stage, as the mount does)
    # and /out/dir -> ../data
    build = ("RUN mkdir -p /out /data && echo keep$W > /data/real && chown $O /data/real "
             "&& ln -s /data/real /out/link && ln -s ../data /out/dir && echo $V > /out/other")
    # two mounts of the stage: a link to the file, and a path through a link to its dir
    use = ("RUN --mount=type=bind,from=build,source=/out/link,target=/l "
           "--mount=type=bind,from=build,source=/out/dir/real,target=/r cat /l /r > /seen")
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref} AS build\nARG V=1\nARG W=1\nARG O=0\n{build}\n"
                                                 f"FROM {busybox_ref}\n{use}\n"})
    def steps(*args: str) -> list[str]:  # (descriptions show the args expanded)
        return ["build" if "mkdir" in s else "use" for s in ran(ctx, tmp_path, cache_env, *args)]

    assert steps() == ["build", "use"]
    # the stage re-runs and changes a file the mount does not select: early cutoff
    assert steps("--build-arg", "V=2") == ["build"]
    # the file the link points at changes: the step re-runs
    assert steps("--build-arg", "V=2", "--build-arg", "W=2") == ["build", "use"]
    # only its owner changes: the step sees that too
    assert steps("--build-arg", "V=2", "--build-arg", "W=2", "--build-arg", "O=1") == ["build", "use"]


def test_a_missing_mount_source_is_reported_by_the_mount(tmp_path, busybox_ref, cache_env):
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\n"
                                                 "RUN --mount=type=bind,source=nope.txt,target=/n cat /n\n"})
    r = irctl("build", ctx, "--progress", "plain", env=cache_env)
    assert r.code != 0
    assert "nope.txt" in r.stderr and "Traceback" not in r.stderr


def test_a_symlink_loop_in_a_mount_source_is_a_plain_error(tmp_path, busybox_ref, cache_env):
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\n"
                                                 "RUN --mount=type=bind,source=loop/x,target=/m true\n"})
    (ctx / "loop").symlink_to("loop")
    r = irctl("build", ctx, "--progress", "plain", env=cache_env)
    assert r.code != 0 and "Traceback" not in r.stderr
    assert "too many levels of symbolic links resolving '/loop/x'" in r.stderr
    assert "PathEscapeError" not in r.stderr  # a user-facing message, not a class name


def test_cache_mount_sharing_and_id_are_not_inputs(tmp_path, busybox_ref, cache_env):
    def dockerfile(opts: str) -> None:
        (ctx / "Dockerfile").write_text(f"FROM {busybox_ref}\nRUN --mount=type=cache,target=/c{opts} ls -ld /c > /o\n")

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    dockerfile("")
    assert len(ran(ctx, tmp_path, cache_env)) == 1
    for opts in (",sharing=locked", ",sharing=private", ",id=other,sharing=locked"):
        dockerfile(opts)
        assert ran(ctx, tmp_path, cache_env) == [], opts
    dockerfile(",uid=1000")  # the new dir's owner is visible to the step: an input
    assert len(ran(ctx, tmp_path, cache_env)) == 1
    dockerfile(",uid=1000,mode=0700")
    assert len(ran(ctx, tmp_path, cache_env)) == 1


def test_a_stage_bind_mount_sees_a_device_node_change(tmp_path, busybox_ref, cache_env):
    # the stage re-runs and replaces /out/d (char 1:3) by char 1:5, with the same mode and owner: the
    # step reading it through a mount sees another device, so it must not be served from the cache
    build = "RUN mkdir -p /out && mknod -m 600 /out/d c 1 $MINOR"
    use = "RUN --mount=type=bind,from=build,source=/out,target=/x ls -l /x/d > /seen"
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref} AS build\nARG MINOR=3\n{build}\n"
                                                 f"FROM {busybox_ref}\n{use}\n"})

    def steps(*args: str) -> list[str]:
        return ["build" if "mknod" in s else "use" for s in ran(ctx, tmp_path, cache_env, *args)]

    assert steps() == ["build", "use"]
    assert steps("--build-arg", "MINOR=5") == ["build", "use"]


def test_a_context_file_whose_xattrs_change_is_copied_again(tmp_path, busybox_ref, cache_env):
    # COPY carries a context file's xattrs (a file capability, as BuildKit's context checksum counts
    # them): setting one after a first build must not leave the image with the copy made without it
    ctx = write(tmp_path / "ctx", {"Dockerfile": f"FROM {busybox_ref}\nCOPY server /server\n", "server": "bin\n"})

    def copied() -> bool:
        r = irctl("build", ctx, "--progress", "json", "--output", f"type=local,dest={tmp_path / 'out'}", env=cache_env)
        assert r.code == 0, r.stderr
        return any(e["kind"] == "finished" and "COPY server" in e["description"] for e in r.events())

    assert copied()
    assert not copied()
    os.setxattr(ctx / "server", "user.irctl-test", b"1")
    assert copied()
    assert not copied()
    os.setxattr(ctx / "server", "user.irctl-test", b"2")
    assert copied()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
@pytest.mark.parametrize("source", ["f", ".", "sub"])
def test_a_context_bind_mount_shows_files_owned_by_root_whoever_owns_them_on_the_host(tmp_path, busybox_ref,
                                                                                    cache_env, source):
    # BuildKit's client sends the context with uid/gid 0; the owners on the host are not in the key
    # either, so a step seeing them would be served stale after a chown
    ctx = write(tmp_path / "ctx", {"f": "x\n", "sub/g": "y\n"})
    for p in (ctx / "f", ctx / "sub", ctx / "sub" / "g"):
        os.chown(p, 1234, 4321)
    check = {"f": "/m", ".": "/m/f /m/sub /m/sub/g", "sub": "/m /m/g"}[source]
    run = (f"RUN --mount=type=bind,source={source},target=/m "
           f"sh -c 'stat -c %u:%g {check}; test -z \"$(stat -c %u:%g {check} | grep -v 0:0)\"'")
    (ctx / "Dockerfile").write_text(f"FROM {busybox_ref}\n{run}\n")
    ran(ctx, tmp_path, cache_env)  # (asserts the build succeeded: the step saw 0:0 only)
