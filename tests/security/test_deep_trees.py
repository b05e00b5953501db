"""Directory trees deeper than Python's recursion limit (and than PATH_MAX): in the context, made by a
RUN step, in a pulled layer. A 1000-deep tree builds and exports (local, rootfs tar, OCI) with every
snapshotter; a 10000-deep one fails with one located line, never a traceback; either way nothing is
left in the store's work dirs."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from tests.support.cli import irctl
from tests.security.conftest import make_layout, write_ctx

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _remove_deep_trees(tmp_path):
    """pytest removes old temp dirs with shutil.rmtree, which recurses: these trees go now, iteratively."""
    yield
    from backend.fs import safefs

    for p in tmp_path.iterdir():
        safefs.rmtree(p, True)

NEST = "mkdir x && i=0; while [ $i -lt {n} ]; do mkdir t && mv x t/d && mv t x; i=$((i+1)); done"  # no long paths


def _deep_dir(root: Path, depth: int, leaf: str = "leaf") -> None:
    """root/d/d/…/d/<leaf> through dir fds (the path is longer than PATH_MAX for 10000 levels)."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    wfd = os.open(leaf, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(wfd, b"deep\n")
    os.close(wfd)
    os.close(fd)


def _depth_of_leaf(root: Path) -> int:
    fd, depth = os.open(root, os.O_RDONLY | os.O_DIRECTORY), 0
    try:
        while True:
            try:
                nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                return depth
            os.close(fd)
            fd, depth = nfd, depth + 1
    finally:
        os.close(fd)


def _left_behind(cache: Path) -> list[str]:
    tmp = cache / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.is_dir() else []


def _one_line_error(r, needle: str) -> None:
    assert r.code != 0
    assert "Traceback" not in r.stderr and "RecursionError" not in r.stderr, r.stderr[-3000:]
    assert needle in r.stderr, r.stderr[-3000:]
    assert max(len(line) for line in r.stderr.splitlines()) < 400, "an error line quotes a whole deep path"


@pytest.mark.parametrize("snapshotter", ["overlay", "copy"])
def test_thousand_deep_trees_build_and_export(tmp_path, layout_ctx, snapshotter):
    ctx = tmp_path / "ctx"
    _deep_dir(ctx / "ctxdeep", 1000)
    write_ctx(ctx, {"Dockerfile": f"FROM busybox\nCOPY ctxdeep /ctxdeep\nRUN {NEST.format(n=1000)}\n"
                                  "RUN cd /x && i=0; while [ $i -lt 500 ]; do cd d; i=$((i+1)); done; rm -rf d\n"})
    cache = tmp_path / "cache"
    env = {"IRCTL_CACHE_DIR": str(cache), "IRCTL_SNAPSHOTTER": snapshotter}
    for kind, dest in (("local", tmp_path / "out"), ("tar", tmp_path / "rootfs.tar"), ("oci", tmp_path / "oci.tar")):
        r = irctl("build", ctx, "--progress", "plain", *layout_ctx, "--output", f"type={kind},dest={dest}", env=env)
        assert r.code == 0, r.stderr[-3000:]
        assert "Traceback" not in r.stderr
    assert _depth_of_leaf(tmp_path / "out" / "ctxdeep") == 1000
    assert _depth_of_leaf(tmp_path / "out" / "x") == 500  # the second RUN cut it: whiteouts 500 deep
    with tarfile.open(tmp_path / "rootfs.tar") as tf:
        names = [m.name for m in tf]
    assert any(n.rstrip("/").endswith("/d" * 999 + "/leaf") for n in names)
    assert _left_behind(cache) == []
    r = irctl("cache", "prune", "--all", env=env)
    assert r.code == 0 and "Traceback" not in r.stderr, r.stderr
    assert not any((cache / "layers").iterdir())


def test_ten_thousand_deep_run_output_fails_cleanly(tmp_path, layout_ctx):
    ctx = write_ctx(tmp_path / "ctx", {"Dockerfile": f"FROM busybox\nRUN {NEST.format(n=10000)}\n"})
    cache = tmp_path / "cache"
    r = irctl("build", ctx, "--progress", "plain", *layout_ctx, env={"IRCTL_CACHE_DIR": str(cache)})
    _one_line_error(r, "nests deeper than 4096 levels")
    assert "Dockerfile:2" in r.stderr
    assert _left_behind(cache) == []


def test_ten_thousand_deep_context_fails_cleanly(tmp_path, layout_ctx):
    ctx = tmp_path / "ctx"
    _deep_dir(ctx / "deep", 10000)
    write_ctx(ctx, {"Dockerfile": "FROM busybox\nCOPY deep /deep\n"})
    cache = tmp_path / "cache"
    r = irctl("build", ctx, "--progress", "plain", *layout_ctx, env={"IRCTL_CACHE_DIR": str(cache)})
    _one_line_error(r, "load build context")  # the path (cut) is longer than PATH_MAX long before 4096 levels
    assert _left_behind(cache) == []


def _deep_layer(depth: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        name = "deep"
        for _ in range(depth):
            name += "/d"
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(ti)
        ti = tarfile.TarInfo(name + "/leaf")
        ti.size = 5
        tf.addfile(ti, io.BytesIO(b"deep\n"))
    return buf.getvalue()


@pytest.mark.parametrize("depth,ok", [(1000, True), (5000, False)])
def test_deep_pulled_layer(tmp_path, depth, ok):
    layout = make_layout(tmp_path / "layout", [_deep_layer(depth)])
    ctx = write_ctx(tmp_path / "ctx", {"Dockerfile": "FROM img\nRUN test -d /deep\n"})
    cache, out = tmp_path / "cache", tmp_path / "out"
    r = irctl("build", ctx, "--progress", "plain", "--build-context", f"img=oci-layout://{layout}:latest",
              "--output", f"type=local,dest={out}", env={"IRCTL_CACHE_DIR": str(cache)})
    if ok:
        assert r.code == 0, r.stderr[-3000:]
        assert _depth_of_leaf(out / "deep") == depth
    else:
        _one_line_error(r, "nested deeper than 4096 levels")
    assert _left_behind(cache) == []


def test_safefs_walk_and_rmtree_have_no_depth_limit_but_the_walk_bound(tmp_path):
    from backend.fs import safefs

    _deep_dir(tmp_path / "t", 10000)
    with pytest.raises(safefs.TreeError, match="nests deeper than 4096 levels"):
        for _ in safefs.walk(tmp_path / "t"):
            pass
    assert sum(1 for _ in safefs.walk(tmp_path / "t", descend=lambda e: e.depth < 100)) == 100
    safefs.rmtree(tmp_path / "t")
    assert not (tmp_path / "t").exists()
