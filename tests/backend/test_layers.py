"""Layer dirs -> OCI tars -> layer dirs, checked against umoci and GNU tar; hostile archives refused."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from backend.store.blobs import BlobStore
from backend.errors import LayerError
from backend.fs.layerformat import opaque_xattr
from backend.oci.compression import MT_LAYER, MT_LAYER_GZIP, MT_LAYER_ZSTD
from backend.oci.extract import ExtractLimits, extract_layer
from backend.oci.layerstore import write_layer_to_store, write_layers_to_store
from backend.oci.layertar import is_empty_layer, write_layer
from tests.support.layers import ROOT, snapshot

needs_root = pytest.mark.skipif(not ROOT, reason="whiteouts, owners and trusted.* xattrs need root")
CAP = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_bind_service=ep, v2
T0 = 1_600_000_000


def make_rich_layer(d: Path) -> Path:
    """A layer exercising every entry kind the format has."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "etc").mkdir()
    (d / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (d / "etc" / "empty").write_bytes(b"")
    big = d / "big.bin"
    big.write_bytes(hashlib.sha256(b"seed").digest() * 40000)  # 1.28 MB, crosses buffer boundaries
    os.link(d / "etc" / "hosts", d / "hosts.hard")
    os.link(d / "etc" / "hosts", d / "etc" / "hosts.hard2")
    os.symlink("etc/hosts", d / "rel-link")
    os.symlink("/nonexistent/target", d / "abs-dangling")
    long_dir = d / ("a" * 99) / ("b" * 120)
    long_dir.mkdir(parents=True)
    (long_dir / ("c" * 200)).write_text("deep")  # path > 255 bytes
    (d / ("n" * 100)).write_text("exactly 100")
    os.symlink("x" * 150, d / "long-target-link")
    (d / "bin").mkdir()
    for name, mode in (("suid", 0o4755), ("sgid", 0o2755), ("both", 0o6711)):
        (d / "bin" / name).write_text(name)
        if ROOT:
            os.chown(d / "bin" / name, 1000, 1001)
        os.chmod(d / "bin" / name, mode)
    (d / "sticky").mkdir()
    os.chmod(d / "sticky", 0o1777)
    (d / "cap").write_text("ping")
    if ROOT:
        os.setxattr(d / "cap", "security.capability", CAP)
    os.setxattr(d / "etc" / "hosts", "user.comment", b"\xff\x00binary value")
    os.mkfifo(d / "fifo")
    if ROOT:
        os.mknod(d / "deleted", stat.S_IFCHR, os.makedev(0, 0))
        (d / "opaque").mkdir()
        (d / "opaque" / "kept").write_text("new")
        os.setxattr(d / "opaque", opaque_xattr(), b"y")
        os.chown(d / "etc" / "empty", 3_000_000, 3_000_001)  # too big for ustar octal: PAX uid/gid
        os.mknod(d / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    set_mtimes(d, T0)
    return d


def set_mtimes(d: Path, t: int) -> None:
    for root, dirs, files in os.walk(d, topdown=False):
        for n in files + dirs:
            os.utime(os.path.join(root, n), (t, t), follow_symlinks=False)
    os.utime(d, (t, t))


def _tar_names(blob: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tf:
        return [m.name for m in tf.getmembers()]


@pytest.mark.parametrize("compression,media_type", [("gzip", MT_LAYER_GZIP), ("zstd", MT_LAYER_ZSTD),
                                                    ("none", MT_LAYER)])
def test_round_trip_through_extract(tmp_path: Path, compression: str, media_type: str) -> None:
    src = make_rich_layer(tmp_path / "src")
    buf = io.BytesIO()
    blob = write_layer(src, buf, compression=compression)
    data = buf.getvalue()
    assert blob.media_type == media_type
    assert blob.size == len(data)
    assert blob.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    res = extract_layer(io.BytesIO(data), media_type, tmp_path / "out")
    assert res.diff_id == blob.diff_id
    assert snapshot(tmp_path / "out") == snapshot(src)
    again = io.BytesIO()
    assert write_layer(tmp_path / "out", again, compression=compression) == blob
    assert again.getvalue() == data


def test_tar_entries_sorted_dirs_first_whiteouts_numeric_owners(tmp_path: Path) -> None:
    src = make_rich_layer(tmp_path / "src")
    buf = io.BytesIO()
    write_layer(src, buf, compression="none")
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    for i, n in enumerate(names):  # every parent appears before its children
        parent = os.path.dirname(n)
        assert not parent or parent in names[:i], n
    assert all(m.uname == "" and m.gname == "" for m in members)
    by = {m.name: m for m in members}
    assert by["hosts.hard"].islnk() and by["hosts.hard"].linkname == "etc/hosts"
    assert by["etc/hosts.hard2"].islnk()
    assert by[("a" * 99) + "/" + ("b" * 120) + "/" + ("c" * 200)].size == 4
    assert by["long-target-link"].linkname == "x" * 150
    assert by["etc/hosts"].pax_headers["SCHILY.xattr.user.comment"].encode("utf-8", "surrogateescape") == \
        b"\xff\x00binary value"
    assert by["bin/both"].mode == 0o6711 and by["sticky"].mode == 0o1777
    if ROOT:
        assert ".wh.deleted" in by and "opaque/.wh..wh..opq" in by
        assert "opaque/.wh..wh..opq" == names[names.index("opaque") + 1]
        assert by["etc/empty"].uid == 3_000_000
        assert by["cap"].pax_headers["SCHILY.xattr.security.capability"].encode("utf-8", "surrogateescape") == CAP
        assert not any("trusted.overlay" in k for m in members for k in m.pax_headers)
        assert (by["null"].devmajor, by["null"].devminor) == (1, 3)


def test_gnu_tar_reads_our_tar(tmp_path: Path) -> None:
    src = make_rich_layer(tmp_path / "src")
    with open(tmp_path / "l.tar", "wb") as f:
        write_layer(src, f, compression="none")
    (tmp_path / "x").mkdir()
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf", str(tmp_path / "l.tar"),
                    "-C", str(tmp_path / "x")], check=True)
    got = snapshot(tmp_path / "x", skip_xattrs=("trusted.",))
    want = snapshot(src, skip_xattrs=("trusted.",))
    if ROOT:  # GNU tar keeps whiteouts as .wh. files; compare everything else
        want.pop("deleted")
        got.pop(".wh.deleted")
        got.pop("opaque/.wh..wh..opq")
    for k in list(want):  # GNU tar sets directory mtimes fine, but re-check only contents here
        if k != "<hardlinks>":
            want[k].pop("mtime", None)
            got[k].pop("mtime", None)
    assert got == want


@needs_root
def test_round_trip_through_umoci(tmp_path: Path) -> None:
    from backend.export.image import ExportOptions, ImageSpec
    from backend.export.oci import export_oci

    src = make_rich_layer(tmp_path / "src")
    store = BlobStore(tmp_path / "store")
    export_oci(ImageSpec(layers=[src]), store, tmp_path / "layout", tar=False, ref_name="t",
               options=ExportOptions(source_date_epoch=T0))
    subprocess.run(["umoci", "unpack", "--image", f"{tmp_path / 'layout'}:t", str(tmp_path / "bundle")],
                   check=True, capture_output=True)
    got = snapshot(tmp_path / "bundle" / "rootfs", skip_xattrs=("trusted.",))
    want = snapshot(src, skip_xattrs=("trusted.",))
    want.pop("deleted")  # a whiteout of nothing leaves nothing in a flattened rootfs
    assert got == want


def test_source_date_epoch_clamps_and_reproduces(tmp_path: Path) -> None:
    a = make_rich_layer(tmp_path / "a")
    b = make_rich_layer(tmp_path / "b")
    set_mtimes(b, T0 + 5000)
    (b / "etc" / "hosts").write_text("127.0.0.1 localhost\n")  # fresh mtime = now
    outs = []
    for d in (a, b):
        buf = io.BytesIO()
        outs.append((write_layer(d, buf, source_date_epoch=T0 - 100), buf.getvalue()))
    assert outs[0] == outs[1]
    with tarfile.open(fileobj=io.BytesIO(outs[0][1])) as tf:
        assert {m.mtime for m in tf.getmembers()} == {T0 - 100}
    data = outs[0][1]
    assert data[:2] == b"\x1f\x8b" and data[4:8] == b"\0\0\0\0"  # gzip: no mtime, no file name
    assert data[3] & 0x08 == 0


def test_empty_layer(tmp_path: Path) -> None:
    (tmp_path / "e").mkdir()
    assert is_empty_layer(tmp_path / "e")
    buf = io.BytesIO()
    blob = write_layer(tmp_path / "e", buf, compression="none")
    assert buf.getvalue() == b"\0" * 1024
    extract_layer(io.BytesIO(buf.getvalue()), MT_LAYER, tmp_path / "out")
    assert os.listdir(tmp_path / "out") == []
    assert blob.diff_id == "sha256:" + hashlib.sha256(b"\0" * 1024).hexdigest()


@needs_root
def test_extract_whiteouts_and_opaque_from_foreign_tar(tmp_path: Path) -> None:
    tar = _tar([("d/", "dir", None), ("d/.wh..wh..opq", "file", b""), ("d/f", "file", b"x"),
                (".wh.gone", "file", b""), ("x/y/z", "file", b"implicit parents")])
    extract_layer(io.BytesIO(gzip.compress(tar)), MT_LAYER_GZIP, tmp_path / "o")
    assert os.getxattr(tmp_path / "o" / "d", opaque_xattr()) == b"y"
    st = os.lstat(tmp_path / "o" / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert (tmp_path / "o" / "x" / "y" / "z").read_text() == "implicit parents"
    assert sorted(os.listdir(tmp_path / "o" / "d")) == ["f"]


def test_compressed_stream_sniffed_despite_media_type(tmp_path: Path) -> None:
    tar = _tar([("f", "file", b"hi")])
    extract_layer(io.BytesIO(gzip.compress(tar)), MT_LAYER, tmp_path / "a")  # label says plain
    extract_layer(io.BytesIO(tar), MT_LAYER_GZIP, tmp_path / "b")  # label says gzip
    assert (tmp_path / "a" / "f").read_text() == (tmp_path / "b" / "f").read_text() == "hi"


# -- hostile archives --------------------------------------------------------------------------

def _tar(entries: list[tuple[str, str, object]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, payload in entries:
            ti = tarfile.TarInfo(name)
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(ti)
            elif kind == "file":
                ti.size = len(payload)  # type: ignore[arg-type]
                tf.addfile(ti, io.BytesIO(payload))  # type: ignore[arg-type]
            elif kind == "symlink":
                ti.type, ti.linkname = tarfile.SYMTYPE, payload  # type: ignore[assignment]
                tf.addfile(ti)
            elif kind == "hardlink":
                ti.type, ti.linkname = tarfile.LNKTYPE, payload  # type: ignore[assignment]
                tf.addfile(ti)
    return buf.getvalue()


@pytest.mark.parametrize("entries,message", [
    ([("../escape", "file", b"x")], "contains '..'"),
    ([("a/../../escape", "file", b"x")], "contains '..'"),
    ([("/etc/escape", "file", b"x")], "absolute"),
    ([("link", "symlink", "{outside}"), ("link/escape", "file", b"x")], "goes through symlink 'link'"),
    ([("link", "symlink", "../.."), ("link/escape", "file", b"x")], "goes through symlink 'link'"),
    ([("d/", "dir", None), ("d/l", "symlink", "{outside}"), ("d/l/sub/escape", "file", b"x")],
     "goes through symlink 'd/l'"),
    ([("h", "hardlink", "../outside/victim")], "contains '..'"),
    ([("h", "hardlink", "{outside}/victim")], "absolute"),
    ([("l", "symlink", "{outside}"), ("h", "hardlink", "l/victim")], "goes through symlink 'l'"),
    ([("h", "hardlink", "missing")], "not in the layer"),
    ([(".wh...", "file", b"")], "whiteout"),
])
def test_hostile_archives_rejected(tmp_path: Path, entries: list, message: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("precious")
    entries = [(n, k, p.format(outside=outside) if isinstance(p, str) else p) for n, k, p in entries]
    dest = tmp_path / "dest" / "layer"
    with pytest.raises(LayerError, match=message.replace("(", r"\(").replace(".", r"\.")):
        extract_layer(io.BytesIO(_tar(entries)), MT_LAYER, dest)
    assert sorted(os.listdir(outside)) == ["victim"]
    assert (outside / "victim").read_text() == "precious"
    assert not (tmp_path / "dest" / "escape").exists() and not (tmp_path / "escape").exists()
    assert not Path("/etc/escape").exists()


def test_gzip_bomb_rejected(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("zeros")
        ti.size = 64 << 20
        tf.addfile(ti, io.BytesIO(bytes(ti.size)))
    bomb = gzip.compress(buf.getvalue(), 9)
    assert len(bomb) < 200_000
    with pytest.raises(LayerError, match=r"expands beyond the limit of 8388608 bytes \(archive bomb\?\)"):
        extract_layer(io.BytesIO(bomb), MT_LAYER_GZIP, tmp_path / "o", limits=ExtractLimits(max_bytes=8 << 20))


def test_entry_count_limit(tmp_path: Path) -> None:
    tar = _tar([(f"f{i}", "file", b"") for i in range(50)])
    with pytest.raises(LayerError, match="more than 10 entries"):
        extract_layer(io.BytesIO(tar), MT_LAYER, tmp_path / "o", limits=ExtractLimits(max_entries=10))


def test_garbage_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LayerError, match="corrupt gzip stream|not a tar|corrupt layer"):
        extract_layer(io.BytesIO(b"\x1f\x8b" + b"garbage" * 100), MT_LAYER_GZIP, tmp_path / "o")


@pytest.mark.skipif(ROOT, reason="checks the unprivileged refusal")
def test_device_nodes_need_root(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("null")
        ti.type, ti.devmajor, ti.devminor = tarfile.CHRTYPE, 1, 3
        tf.addfile(ti)
    with pytest.raises(LayerError, match="only be extracted as root"):
        extract_layer(io.BytesIO(buf.getvalue()), MT_LAYER, tmp_path / "o")


# -- store integration --------------------------------------------------------------------------

def test_parallel_compression_cached_by_diff_id(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    dirs = []
    for i in range(4):
        d = tmp_path / f"l{i}"
        d.mkdir()
        (d / f"file{i}").write_bytes(os.urandom(1 << 20) + b"x" * (1 << 20))
        dirs.append(d)
    first = write_layers_to_store(dirs, store, compression="zstd", max_workers=4)
    assert [b.digest for b in first] == [b.digest for b in write_layers_to_store(dirs, store, compression="zstd")]
    for b in first:
        assert store.has(b.digest) and store.lookup_compressed(b.diff_id, "zstd").digest == b.digest
        store.verify(b.digest)
    # with a diff_id hint the directory is not even read
    gone = tmp_path / "gone"
    assert write_layer_to_store(gone, store, compression="zstd", diff_id=first[0].diff_id) == first[0]
    shutil.rmtree(dirs[0])
    assert store.lookup_compressed(first[0].diff_id, "gzip") is None


def test_multi_member_and_zero_padded_gzip(tmp_path: Path) -> None:
    tar = _tar([("a", "file", b"first"), ("b", "file", b"second")])
    half = len(tar) // 1024 * 512  # split on a block boundary into two gzip members
    blob = gzip.compress(tar[:half]) + gzip.compress(tar[half:]) + b"\0" * 3000
    res = extract_layer(io.BytesIO(blob), MT_LAYER_GZIP, tmp_path / "o")
    assert res.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert (tmp_path / "o" / "b").read_text() == "second"


def test_extract_stored_layer_records_blob_for_reuse(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    foreign = gzip.compress(_tar([("etc/", "dir", None), ("etc/os-release", "file", b"ID=test\n")]), 1)
    digest = store.write_bytes(foreign)
    desc = {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": digest, "size": len(foreign)}
    from backend.oci.layerstore import extract_stored_layer

    with pytest.raises(LayerError, match="but the image config says sha256:0000"):
        extract_stored_layer(store, desc, tmp_path / "bad", expected_diff_id="sha256:" + "0" * 64)
    res = extract_stored_layer(store, desc, tmp_path / "l")
    hit = store.lookup_compressed(res.diff_id, "gzip")
    assert hit is not None and hit.digest == digest and hit.media_type == MT_LAYER_GZIP
    # exporting the unchanged layer with its diff_id reuses the original bytes, not our re-tar
    assert write_layer_to_store(tmp_path / "l", store, diff_id=res.diff_id).digest == digest


# -- property: any tree of plain files/dirs/symlinks/hard links survives write -> extract -----------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_names = st.text(alphabet=st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)),
                 min_size=1, max_size=40).filter(lambda n: n not in (".", "..") and not n.startswith(".wh."))
_tree = st.recursive(
    st.one_of(st.binary(max_size=3000), st.tuples(st.just("symlink"), _names)),
    lambda children: st.dictionaries(_names, children, max_size=5),
    max_leaves=20,
)


def _materialize(d: Path, node: object, links: list[Path]) -> None:
    d.mkdir()
    assert isinstance(node, dict)
    for name, child in node.items():
        p = d / name
        if isinstance(child, dict):
            _materialize(p, child, links)
        elif isinstance(child, tuple):
            os.symlink(child[1], p)
        else:
            p.write_bytes(child)
            if len(links) < 3:
                links.append(p)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=st.dictionaries(_names, _tree, max_size=6), mode=st.sampled_from([0o644, 0o4755, 0o2700, 0o600]),
       compression=st.sampled_from(["gzip", "zstd", "none"]))
def test_property_round_trip(tmp_path_factory: pytest.TempPathFactory, tree: dict, mode: int,
                             compression: str) -> None:
    base = tmp_path_factory.mktemp("prop")
    links: list[Path] = []
    _materialize(base / "src", tree, links)
    for i, p in enumerate(links):
        os.chmod(p, mode)
        if not os.path.lexists(p.with_name(p.name[:30] + f"-hl{i}")):
            os.link(p, p.with_name(p.name[:30] + f"-hl{i}"))
    set_mtimes(base / "src", T0)
    buf = io.BytesIO()
    blob = write_layer(base / "src", buf, compression=compression)
    res = extract_layer(io.BytesIO(buf.getvalue()), blob.media_type, base / "out")
    assert res.diff_id == blob.diff_id
    assert snapshot(base / "out") == snapshot(base / "src")


def test_layer_id_hint_remembers_its_tar_per_source_date_epoch(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    d = tmp_path / "committed"
    d.mkdir()
    (d / "f").write_bytes(os.urandom(5000))
    layer_id = "sha256:" + "c" * 64  # a committed layer's id, not the diff_id of its tar
    first = write_layer_to_store(d, store, diff_id=layer_id, source_date_epoch=T0)
    assert first.diff_id != layer_id
    shutil.rmtree(d)  # the second export is answered from the store alone
    assert write_layer_to_store(d, store, diff_id=layer_id, source_date_epoch=T0) == first
    with pytest.raises(LayerError, match="does not exist"):  # another epoch means another tar
        write_layer_to_store(d, store, diff_id=layer_id, source_date_epoch=T0 + 1)


def test_later_entries_replace_earlier_ones(tmp_path: Path) -> None:
    tar = _tar([("d/", "dir", None), ("d/x", "file", b"1"), ("d", "file", b"now a file"),
                ("l", "symlink", "d"), ("l", "file", b"symlink replaced, not followed"), ("e/", "dir", None)])
    extract_layer(io.BytesIO(tar), MT_LAYER, tmp_path / "o")
    assert (tmp_path / "o" / "d").read_bytes() == b"now a file"
    assert not (tmp_path / "o" / "l").is_symlink() and (tmp_path / "o" / "l").read_bytes().startswith(b"symlink")
    assert (tmp_path / "o" / "e").is_dir()


def test_a_cancelled_compression_stores_nothing(tmp_path: Path) -> None:
    import threading

    from backend.oci.layerstore import Cancelled, write_layer_to_store

    layer = tmp_path / "layer"
    layer.mkdir()
    (layer / "big").write_bytes(os.urandom(6 << 20))  # several chunks: cancel is checked per write
    store = BlobStore(tmp_path / "store")
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        write_layer_to_store(layer, store, diff_id="sha256:" + "a" * 64, cancel=cancel)
    assert list(store.tmp_dir.iterdir()) == [] and list(store) == []
    blob = write_layer_to_store(layer, store, diff_id="sha256:" + "a" * 64)
    assert list(store) == [blob.digest]


def test_one_layer_is_never_compressed_twice_at_once(tmp_path: Path, monkeypatch) -> None:
    """The exporter waits for a background compression of the same layer and reuses its blob."""
    import threading

    from backend.oci import layerstore as layers

    layer = tmp_path / "layer"
    layer.mkdir()
    (layer / "f").write_bytes(os.urandom(1 << 20))
    store = BlobStore(tmp_path / "store")
    calls: list[int] = []
    real = layers.write_layer
    gate = threading.Event()

    def slow_write_layer(*a, **kw):
        calls.append(1)
        gate.wait(10)
        return real(*a, **kw)

    monkeypatch.setattr(layers, "write_layer", slow_write_layer)
    hint = "sha256:" + "b" * 64
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(layers.write_layer_to_store(layer, store, diff_id=hint)))
               for _ in range(2)]
    for t in threads:
        t.start()
    threading.Timer(0.3, gate.set).start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and results[0] == results[1]


def test_layer_xattrs_leave_out_the_overlays_and_raise_what_they_cannot_explain(tmp_path: Path) -> None:
    """One reader of xattrs (``fs.layerformat.read_xattrs``) for the layer tar, the layer's identity and
    the local export: it drops only what the skip list names, and a path it cannot read is an error,
    not a file without xattrs (before, the snapshot's copy returned ``{}`` for any failure)."""
    import errno

    from backend.fs.layerformat import read_xattrs
    from backend.oci.layertar import SKIP_XATTR_PREFIXES, layer_xattrs

    f = tmp_path / "f"
    f.write_bytes(b"x")
    os.setxattr(f, "user.keep", b"1")
    os.setxattr(f, "user.overlay.origin", b"2")
    assert read_xattrs(os.fsencode(f))["user.overlay.origin"] == b"2"
    assert layer_xattrs(os.fsencode(f)) == read_xattrs(str(f), SKIP_XATTR_PREFIXES) == {"user.keep": b"1"}
    with pytest.raises(OSError) as e:
        read_xattrs(str(tmp_path / "missing"))
    assert e.value.errno == errno.ENOENT


def test_compression_from_the_bytes_and_from_the_media_type() -> None:
    from backend.oci.compression import compression_named, sniff_compression

    assert [sniff_compression(h) for h in (b"\x1f\x8b\x08\x00", b"\x28\xb5\x2f\xfd", b"ustar", b"")] == \
        ["gzip", "zstd", "none", "none"]
    assert [compression_named(m) for m in (MT_LAYER_GZIP, MT_LAYER_ZSTD, MT_LAYER,
                                            "application/vnd.docker.image.rootfs.diff.tar.gzip")] == \
        ["gzip", "zstd", "none", "gzip"]
