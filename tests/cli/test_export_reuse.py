"""Re-exporting an unchanged image to the same destination writes nothing (issue 12, item 4), and a
destination someone else changed, replaced or booby-trapped is written again, safely."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from tests.support.cli import FAST, build_ok, irctl

pytestmark = pytest.mark.e2e
FILE_OUTPUTS = ["type=oci", "type=docker", "type=tar"]


@pytest.fixture
def ctx(tmp_path, busybox_ref) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {busybox_ref}\nRUN echo a > /a\n")
    return ctx


def ident(p: Path) -> tuple:
    st = os.lstat(p)
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def exported_line(stderr: str) -> str:
    return [line for line in stderr.splitlines() if line.startswith("exported")][-1]


@pytest.mark.parametrize("kind", FILE_OUTPUTS)
def test_a_noop_rebuild_leaves_the_export_alone(ctx, cache_env, tmp_path, kind):
    dest = tmp_path / "out.tar"
    out = f"{kind},dest={dest}"
    first = build_ok(ctx, cache_env, "--output", out, "-t", "app:1")
    assert FAST not in first
    before, data = ident(dest), dest.read_bytes()
    second = build_ok(ctx, cache_env, "--output", out, "-t", "app:1")
    assert FAST in second and exported_line(second) == exported_line(first)
    assert ident(dest) == before  # not rewritten
    # through the solver (an unrelated context file changed): the same image, still not rewritten
    (ctx / "unrelated.txt").write_text("x")
    third = build_ok(ctx, cache_env, "--output", out, "-t", "app:1")
    assert FAST not in third and exported_line(third) == exported_line(first)
    assert ident(dest) == before
    # another tag is another export (the name is in the archive): written again
    build_ok(ctx, cache_env, "--output", out, "-t", "app:2")
    if kind != "type=tar":
        assert dest.read_bytes() != data
    build_ok(ctx, cache_env, "--output", out, "-t", "app:1")
    assert dest.read_bytes() == data


@pytest.mark.parametrize("kind", FILE_OUTPUTS)
def test_a_changed_destination_is_written_again(ctx, cache_env, tmp_path, kind):
    dest = tmp_path / "out.tar"
    out = f"{kind},dest={dest}"
    build_ok(ctx, cache_env, "--output", out)
    data = dest.read_bytes()
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    for change in ("truncate", "same-size", "touch", "delete", "symlink"):
        if change == "truncate":
            with open(dest, "r+b") as f:
                f.truncate(1000)
        elif change == "same-size":
            with open(dest, "r+b") as f:
                f.seek(600)
                f.write(b"XXXX")
        elif change == "touch":
            st = os.stat(dest)  # mtime put back: the ctime still tells
            with open(dest, "r+b") as f:
                f.seek(600)
                f.write(b"YYYY")
            os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))
        elif change == "delete":
            dest.unlink()
        else:
            dest.unlink()
            dest.symlink_to(victim)
        stderr = build_ok(ctx, cache_env, "--output", out)
        assert FAST not in stderr, change
        assert not dest.is_symlink() and dest.read_bytes() == data, change
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize("kind", ["type=oci", "type=docker"])  # (type=tar never had a temporary name)
def test_a_planted_temporary_name_is_not_followed(ctx, cache_env, tmp_path, kind):
    """The archive is written under a random name beside dest, never a predictable ``dest.partial``."""
    dest = tmp_path / "out.tar"
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / "out.tar.partial").symlink_to(victim)
    build_ok(ctx, cache_env, "--output", f"{kind},dest={dest}")
    assert victim.read_text() == "keep me"
    assert tarfile.is_tarfile(dest)
    assert sorted(p.name for p in tmp_path.iterdir() if ".partial" in p.name) == ["out.tar.partial"]


def test_oci_directory_layout_is_checked_file_by_file(ctx, cache_env, tmp_path):
    dest = tmp_path / "layout"
    out = f"type=oci,tar=false,dest={dest}"
    build_ok(ctx, cache_env, "--output", out)
    index = (dest / "index.json").read_bytes()
    blobs = sorted((dest / "blobs/sha256").iterdir())
    before = {p.name: ident(p) for p in blobs}
    assert FAST in build_ok(ctx, cache_env, "--output", out)
    assert {p.name: ident(p) for p in blobs} == before
    # a blob rewritten in place (it is the store's hard link: copy it, then damage the copy)
    victim_blob = max(blobs, key=lambda p: p.stat().st_size)
    data = victim_blob.read_bytes()
    victim_blob.unlink()
    victim_blob.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert FAST not in build_ok(ctx, cache_env, "--output", out)
    assert victim_blob.read_bytes() == data and (dest / "index.json").read_bytes() == index
    # a symlink planted for oci-layout is replaced, not written through
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (dest / "oci-layout").unlink()
    (dest / "oci-layout").symlink_to(victim)
    assert FAST not in build_ok(ctx, cache_env, "--output", out)
    assert victim.read_text() == "keep me" and not (dest / "oci-layout").is_symlink()
    # blobs/ swapped for a link elsewhere: refused in one line, nothing written there
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.rename(dest / "blobs", tmp_path / "old-blobs")
    (dest / "blobs").symlink_to(elsewhere)
    r = irctl("build", "--progress", "plain", "--output", out, ctx, env=cache_env)
    assert r.code != 0 and "refusing to write through it" in r.stderr and "Traceback" not in r.stderr
    assert list(elsewhere.iterdir()) == []


def test_a_killed_builds_debris_sends_the_next_build_down_the_ordinary_path(ctx, cache_env, tmp_path):
    """The solver reaps what a killed build left (work dir, mounts, containers); the fast path
    would not, so it steps aside while such debris is there."""
    out = f"type=oci,dest={tmp_path / 'out.tar'}"
    build_ok(ctx, cache_env, "--output", out)
    assert FAST in build_ok(ctx, cache_env, "--output", out)
    tmp = Path(cache_env["IRCTL_CACHE_DIR"]) / "tmp"
    (tmp / "s-dead").mkdir()
    (tmp / "s-dead.lock").touch()  # nobody holds it: its build is gone
    assert FAST not in build_ok(ctx, cache_env, "--output", out)
    assert not (tmp / "s-dead").exists() and not (tmp / "s-dead.lock").exists()
    assert FAST in build_ok(ctx, cache_env, "--output", out)


def test_no_cache_forgets_the_exports_of_the_build_it_replaced(tmp_path, busybox_ref, cache_env):
    """``--no-cache`` re-runs the steps and re-dates them, even when their files are the same (a
    COPY): the image changes, so an earlier export of the same inputs no longer answers for it."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {busybox_ref}\nCOPY a.txt /a.txt\n")
    (ctx / "a.txt").write_text("a\n")
    out = f"type=oci,dest={tmp_path / 'out.tar'}"
    first = exported_line(build_ok(ctx, cache_env, "--output", out))
    build_ok(ctx, cache_env, "--no-cache")
    again = build_ok(ctx, cache_env, "--output", out)
    assert FAST not in again and exported_line(again) != first
