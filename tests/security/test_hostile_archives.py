"""Hostile archives: ADD of a local tar, and image layers pulled from a registry, carrying ``../``
names, absolute names, symlink-then-write-through tricks, hard links out of the tree, device
nodes, and bombs.  Every case must be refused with a clear error or extracted inside the image —
never onto the host."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import uuid
from pathlib import Path

import pytest
import zstandard

from tests.support.cli import error_line, irctl
from tests.security.conftest import entry, make_layout, push_layout, tar_bytes, write_ctx

pytestmark = pytest.mark.e2e


def _cases(mark: str) -> dict[str, list]:
    """name -> tar entries; every write aims at /tmp/<mark>… or /etc/<mark>… on the host."""
    return {
        "dotdot-name": [entry(f"../../../../../../tmp/{mark}", data=b"pwned")],
        "dotdot-inner": [entry("a/", "dir"), entry(f"a/../../../../../../tmp/{mark}", data=b"pwned")],
        "absolute-name": [entry(f"/tmp/{mark}", data=b"pwned")],
        "abs-symlink-then-write": [entry("l", "symlink", link="/tmp"), entry(f"l/{mark}", data=b"pwned")],
        "rel-symlink-then-write": [entry("l", "symlink", link="../../../../../../../tmp"),
                                   entry(f"l/{mark}", data=b"pwned")],
        "symlink-chain": [entry("a", "symlink", link="b"), entry("b", "symlink", link="../../../../../.."),
                          entry(f"a/tmp/{mark}", data=b"pwned")],
        "dir-replaced-by-symlink": [entry("x/", "dir"), entry("x", "symlink", link="/etc"),
                                    entry(f"x/{mark}", data=b"pwned")],
        "symlink-as-file-target": [entry("f", "symlink", link=f"/tmp/{mark}"), entry("f", data=b"pwned")],
        "hardlink-dotdot": [entry("h", "hardlink", link="../../../../../../etc/passwd")],
        "hardlink-absolute": [entry("h", "hardlink", link="/etc/passwd")],
        "hardlink-via-symlink": [entry("s", "symlink", link="/etc"), entry("h", "hardlink", link="s/passwd")],
        "hardlink-then-write": [entry("s", "symlink", link=f"/tmp/{mark}"), entry("h", "hardlink", link="s"),
                                entry("h", data=b"pwned")],
        "char-device": [entry("dev/mem", "chr", devmajor=1, devminor=1, mode=0o666)],
        "block-device": [entry("dev/disk", "blk", devmajor=7, devminor=0, mode=0o666)],
        "fifo": [entry("p", "fifo")],
        "user-owned-device": [_owned(entry("dev/mem", "chr", devmajor=1, devminor=1, mode=0o600), 1000)],
    }


def _owned(info, uid: int):
    info.uid = info.gid = uid
    return info


def _host_untouched(mark: str) -> list[str]:
    return [str(p) for d in ("/tmp", "/etc", "/") for p in Path(d).glob(f"{mark}*")]


def _devices(out: Path) -> list[tuple[str, int, int]]:
    found = []
    for p in out.rglob("*"):
        st = os.lstat(p)
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            found.append((str(p.relative_to(out)), stat.S_IMODE(st.st_mode), st.st_uid))
    return found


def _check(case: str, r, out: Path, mark: str, outcomes: dict) -> None:
    assert _host_untouched(mark) == [], f"{case}: wrote onto the host"
    if r.code != 0:
        assert "Traceback" not in r.stderr, r.stderr
        outcomes[case] = "refused: " + error_line(r.stderr)
        return
    for p in out.rglob("*"):  # nothing in the export may point at (or be) a host file with our mark
        if p.is_file() and not p.is_symlink():
            assert p.read_bytes() != Path("/etc/passwd").read_bytes() or p.name == "passwd", f"{case}: {p}"
    # a device node exported to a host dir must not be usable by other users
    world = [(p, oct(m), uid) for p, m, uid in _devices(out) if m & 0o066 or uid != 0]
    assert world == [], f"{case}: the local export created device nodes other users can open: {world}"
    outcomes[case] = "contained"


ADD_OUTCOMES: dict[str, str] = {}


@pytest.mark.parametrize("case", sorted(_cases("x")))
def test_add_local_archive(tmp_path, layout_ctx, case):
    mark = f"irctl-pwned-{uuid.uuid4().hex}"
    ctx = write_ctx(tmp_path / "ctx", {"evil.tar": tar_bytes(_cases(mark)[case]),
                                       "Dockerfile": "FROM busybox\nADD evil.tar /dest/\n"})
    out = tmp_path / "out"
    r = irctl("build", ctx, "--progress", "plain", *layout_ctx, "--output", f"type=local,dest={out}",
              env={"IRCTL_CACHE_DIR": str(tmp_path / "cache")})
    _check(case, r, out, mark, ADD_OUTCOMES)
    print(f"ADD {case}: {ADD_OUTCOMES[case]}")


@pytest.mark.parametrize("compression", ["gzip", "bzip2", "xz", "zstd"])
def test_add_compressed_archive_with_dotdot(tmp_path, layout_ctx, compression):
    mark = f"irctl-pwned-{uuid.uuid4().hex}"
    raw = tar_bytes(_cases(mark)["rel-symlink-then-write"])
    data = {"gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress,
            "zstd": zstandard.ZstdCompressor().compress}[compression](raw)
    ctx = write_ctx(tmp_path / "ctx", {"evil.tar.x": data, "Dockerfile": "FROM busybox\nADD evil.tar.x /dest/\n"})
    r = irctl("build", ctx, "--progress", "plain", *layout_ctx, env={"IRCTL_CACHE_DIR": str(tmp_path / "cache")})
    assert _host_untouched(mark) == []
    assert r.code != 0 and "points outside the destination" in r.stderr, r.stderr


PULL_OUTCOMES: dict[str, str] = {}


@pytest.mark.parametrize("case", sorted(_cases("x")))
def test_pulled_layer(tmp_path, registry, case):
    mark = f"irctl-pwned-{uuid.uuid4().hex}"
    layout = make_layout(tmp_path / "layout", [tar_bytes(_cases(mark)[case])])
    ref = f"{registry}/hostile/{case}:{uuid.uuid4().hex[:8]}"
    push_layout(layout, ref)
    ctx = write_ctx(tmp_path / "ctx", {"Dockerfile": f"FROM {ref}\nRUN echo ran > /ran\n"})
    out = tmp_path / "out"
    r = irctl("build", ctx, "--progress", "plain", "--output", f"type=local,dest={out}",
              env={"IRCTL_CACHE_DIR": str(tmp_path / "cache")})
    _check(case, r, out, mark, PULL_OUTCOMES)
    print(f"FROM {case}: {PULL_OUTCOMES[case]}")


# ------------------------------------------------------------------------------------------ bombs
# The default limits (ADD: 1M entries / 32 GiB; layers: 64 GiB) are too big to hit in a test, so the
# limits are lowered here; the extractors are the very functions the builds use.

def test_add_archive_bomb_limits(tmp_path):
    from backend.fileops.copy import FileOpError
    from backend.fileops.unpack import UnpackLimits, extract_archive

    big = tmp_path / "big.tar.gz"
    with gzip.open(big, "wb") as z:  # 64 MiB of zeros, 64 KiB compressed
        z.write(tar_bytes([entry("zeros", data=bytes(64 << 20))]))
    many = tmp_path / "many.tar"
    many.write_bytes(tar_bytes([entry(f"f{i}") for i in range(2000)]))
    for path, limits, what in ((big, UnpackLimits(max_bytes=8 << 20), "bytes"),
                               (many, UnpackLimits(max_entries=1000), "entries")):
        dest = tmp_path / f"dest-{what}"
        dest.mkdir()
        with pytest.raises(FileOpError, match=f"more than .* {what}"):
            extract_archive(str(path), str(dest), limits=limits)
        assert sum(f.stat().st_size for f in dest.rglob("*") if f.is_file()) <= (8 << 20) + (1 << 20)


def test_layer_bomb_limits(tmp_path):
    from backend.errors import LayerError
    from backend.oci.extract import ExtractLimits, extract_layer

    blob = gzip.compress(tar_bytes([entry("zeros", data=bytes(64 << 20))]))
    with pytest.raises(LayerError, match="archive bomb"):
        extract_layer(io.BytesIO(blob), "application/vnd.oci.image.layer.v1.tar+gzip", tmp_path / "a",
                      limits=ExtractLimits(max_bytes=8 << 20))
    many = gzip.compress(tar_bytes([entry(f"f{i}") for i in range(2000)]))
    with pytest.raises(LayerError, match="entries"):
        extract_layer(io.BytesIO(many), "application/vnd.oci.image.layer.v1.tar+gzip", tmp_path / "b",
                      limits=ExtractLimits(max_entries=1000))
