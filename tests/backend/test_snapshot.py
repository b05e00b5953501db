"""Snapshots over the layer format: overlay and copy snapshotters, apply_layers, layer digests, mount stubs.

Whiteouts (char 0:0) and `trusted.*` xattrs need root, so almost everything here does; no fakes."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.fs.mountpoints import LayerView, resolve_in_root, remove_mount_stubs
from backend.fs.layerformat import is_opaque, is_whiteout, opaque_xattr
from backend.snapshot.copydiff import CopySnapshotter
from backend.snapshot.detect import detect_snapshotter
from backend.snapshot.layertree import apply_layers, layer_tree_digest
from backend.snapshot.overlay import OverlaySnapshotter

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: whiteouts (mknod) and trusted.* xattrs")
SNAPSHOTTERS = [OverlaySnapshotter, CopySnapshotter]


def whiteout(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR | 0o000, 0)


def tree(root: Path) -> dict[str, str]:
    """A readable summary of a directory: path → kind (+ content / target / opaque)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            st = os.lstat(p)
            if is_whiteout(st):
                out[rel] = "whiteout"
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = "-> " + os.readlink(p)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = "dir (opaque)" if is_opaque(p) else "dir"
            else:
                out[rel] = p.read_bytes().decode(errors="replace")
    return out


@pytest.fixture
def layers(tmp_path: Path) -> list[Path]:
    """Two layers: a base, and a top one deleting a file and replacing a dir wholesale."""
    base, top = tmp_path / "l0", tmp_path / "l1"
    for d in ("etc", "keep", "gone", "d/sub"):
        (base / d).mkdir(parents=True)
    (base / "etc/conf").write_text("base")
    (base / "keep/a").write_text("a")
    (base / "gone/x").write_text("x")
    (base / "d/sub/deep").write_text("deep")
    (base / "d/old").write_text("old")
    os.symlink("../etc/conf", base / "keep/link")
    (top / "d").mkdir(parents=True)
    (top / "etc").mkdir()
    (top / "etc/conf").write_text("top")
    (top / "d/new").write_text("new")
    if os.geteuid() == 0:
        whiteout(top / "gone")
        os.setxattr(top / "d", opaque_xattr(), b"y")
    return [base, top]


@root_only
def test_apply_layers_honours_whiteouts_and_opaque_dirs(layers: list[Path], tmp_path: Path) -> None:
    out = apply_layers(layers, tmp_path / "flat")
    assert tree(out) == {"etc": "dir", "etc/conf": "top", "keep": "dir", "keep/a": "a",
                         "keep/link": "-> ../etc/conf", "d": "dir", "d/new": "new"}
    assert not os.listxattr(out / "d")


def test_layer_tree_digest_ignores_mtimes_but_not_content_or_mode(tmp_path: Path) -> None:
    a = tmp_path / "a"
    (a / "dir").mkdir(parents=True)
    (a / "dir/f").write_text("x")
    d1 = layer_tree_digest(a)
    os.utime(a / "dir/f", (1, 1))
    os.utime(a / "dir", (2, 2))
    assert layer_tree_digest(a) == d1
    os.chmod(a / "dir/f", 0o600)
    d2 = layer_tree_digest(a)
    assert d2 != d1
    (a / "dir/f").write_text("y")
    assert layer_tree_digest(a) != d2
    assert d1.startswith("sha256:") and len(d1) == 71


@root_only
def test_layer_tree_digest_covers_whiteouts_xattrs_and_owners(tmp_path: Path) -> None:
    a = tmp_path / "a"
    (a / "d").mkdir(parents=True)
    base = layer_tree_digest(a)
    whiteout(a / "w")
    with_whiteout = layer_tree_digest(a)
    assert with_whiteout != base
    os.setxattr(a / "d", opaque_xattr(), b"y")
    assert layer_tree_digest(a) != with_whiteout
    opaque = layer_tree_digest(a)
    os.chown(a / "d", 1000, 1000)
    assert layer_tree_digest(a) != opaque


@root_only
@pytest.mark.parametrize("snapshotter", SNAPSHOTTERS, ids=lambda s: s.name)
def test_snapshot_records_writes_deletes_and_replaced_dirs(snapshotter, layers: list[Path], tmp_path: Path) -> None:
    upper, work = tmp_path / "upper", tmp_path / "work"
    upper.mkdir()
    with snapshotter().mounted(layers, upper, work) as root:
        assert (root / "etc/conf").read_text() == "top"
        assert not (root / "gone").exists() and not (root / "d/old").exists()
        (root / "new.txt").write_text("hello")
        (root / "keep/a").unlink()
        shutil.rmtree(root / "etc")
        (root / "etc").mkdir()
        (root / "etc/fresh").write_text("f")
    assert tree(upper) == {"new.txt": "hello", "keep": "dir", "keep/a": "whiteout",
                           "etc": "dir (opaque)", "etc/fresh": "f"}
    for p in [upper, *upper.rglob("*")]:  # overlay's bookkeeping (origin, impure, uuid) is not layer content
        assert all(not x.startswith("trusted.overlay.") or x == opaque_xattr() for x in os.listxattr(p))
    assert not list(work.parent.glob(".irctl-snap.*")), "scratch dirs must be cleaned up"


@root_only
def test_copy_and_overlay_snapshotters_produce_the_same_layer(layers: list[Path], tmp_path: Path) -> None:
    def ops(root: Path) -> None:
        (root / "keep/b").write_text("b")
        os.chmod(root / "keep", 0o700)
        (root / "etc/conf").write_text("changed")
        os.unlink(root / "keep/link")
        shutil.rmtree(root / "d")
        (root / "d").write_text("now a file")
        os.makedirs(root / "x/y/z")
        os.symlink("/etc", root / "x/y/z/l")
        os.chown(root / "x/y", 1000, 1000)
        os.setxattr(root / "x/y/z", "user.note", b"v")
        os.link(root / "keep/b", root / "keep/b2")

    digests = {}
    for snap in SNAPSHOTTERS:
        upper = tmp_path / f"upper-{snap.name}"
        upper.mkdir()
        with snap().mounted(layers, upper, tmp_path / f"work-{snap.name}") as root:
            ops(root)
        digests[snap.name] = (layer_tree_digest(upper), tree(upper))
    assert digests["copy"][1] == digests["overlay"][1]
    assert digests["copy"][0] == digests["overlay"][0]


@root_only
@pytest.mark.parametrize("snapshotter", SNAPSHOTTERS, ids=lambda s: s.name)
def test_empty_lowers_give_an_empty_writable_root(snapshotter, tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    with snapshotter().mounted([], upper, tmp_path / "work") as root:
        assert list(root.iterdir()) == []
        (root / "f").write_text("1")
    assert tree(upper) == {"f": "1"}


@root_only
@pytest.mark.parametrize("snapshotter", SNAPSHOTTERS, ids=lambda s: s.name)
def test_readonly_view_shows_the_merged_tree(snapshotter, layers: list[Path], tmp_path: Path) -> None:
    """``readonly`` shows what ``mounted`` shows (whiteouts and opaque dirs applied), for one layer
    or several, and leaves nothing mounted; the overlay one refuses writes."""
    upper = tmp_path / "upper"
    upper.mkdir()
    with snapshotter().mounted(layers, upper, tmp_path / "rw" / "work") as root:
        expected = tree(root)
    for lowers, want in ((layers, expected), (layers[:1], None)):
        work = tmp_path / f"ro-{len(lowers)}"
        work.mkdir()
        with snapshotter().readonly(lowers, work / "work") as root:
            assert tree(root) == (want if want is not None else tree(lowers[0]))
            mountpoint = str(root)
            if snapshotter is OverlaySnapshotter:
                with pytest.raises(OSError) as e:
                    (root / "new").write_text("x")
                assert e.value.errno == errno.EROFS
        assert f" {mountpoint} " not in _mounted_targets()
        assert not list(work.glob(".irctl-snap.*"))
    assert tree(layers[1]) != {} and not (layers[1] / "new").exists() and not (layers[0] / "new").exists()


def _mounted_targets() -> str:
    return Path("/proc/self/mountinfo").read_text()


@root_only
@pytest.mark.parametrize("count,name_len", [(60, 90), (520, 4)], ids=["long-option-string", "over-500-layers"])
def test_overlay_many_lowers(count: int, name_len: int, tmp_path: Path) -> None:
    """Beyond one page of mount options (fsconfig `lowerdir+`) and beyond overlay's 500-layer stack."""
    lowers = []
    for i in range(count):
        layer = tmp_path / f"{i:04d}{'L' * name_len}"
        layer.mkdir()
        (layer / f"f{i}").write_text(str(i))
        (layer / "top").write_text(str(i))
        lowers.append(layer)
    upper = tmp_path / "upper"
    upper.mkdir()
    with OverlaySnapshotter().mounted(lowers, upper, tmp_path / "work") as root:
        assert (root / "top").read_text() == str(count - 1)
        assert (root / "f0").read_text() == "0" and (root / f"f{count - 1}").exists()
        assert len(list(root.iterdir())) == count + 1
        mountpoint = str(root)
    assert mountpoint not in _mounted_targets()
    assert not list(tmp_path.glob(".irctl-snap.*"))


@root_only
def test_mount_is_gone_after_an_exception(layers: list[Path], tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    with pytest.raises(ZeroDivisionError):
        with OverlaySnapshotter().mounted(layers, upper, tmp_path / "work") as root:
            mountpoint = str(root)
            (root / "f").write_text("x")
            1 / 0
    assert mountpoint not in _mounted_targets()
    assert (upper / "f").read_text() == "x"


@root_only
def test_detect_snapshotter_remembers_a_positive_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import backend.snapshot.detect as snapshot

    probes = []
    real = snapshot._overlay_works.__wrapped__

    def counting(root: str, kind: str = "overlay") -> bool:
        probes.append((root, kind))
        return real(root, kind)

    monkeypatch.setattr(snapshot, "_overlay_works", counting)
    work, memo = tmp_path / "tmp" / "s-1", tmp_path / "snapshotter.probe"
    work.mkdir(parents=True)
    assert detect_snapshotter(tmp_path / "tmp", probe_dir=work, memo=memo).name == "overlay"
    assert probes == [(str(work), "overlay")] and os.listdir(work) == []  # probed in (and cleaned from) work
    assert detect_snapshotter(tmp_path / "tmp", probe_dir=work, memo=memo).name == "overlay"
    assert len(probes) == 1  # remembered
    memo.write_text(memo.read_text().replace("overlay-probe-v1", "overlay-probe-v1 another-boot"))
    assert detect_snapshotter(tmp_path / "tmp", probe_dir=work, memo=memo).name == "overlay"
    assert len(probes) == 2  # a memo of another boot/kernel/fs/user is not trusted


@root_only
def test_detect_snapshotter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert detect_snapshotter(tmp_path).name == "overlay"  # ext4/tmpfs as root: overlay mounts
    monkeypatch.setenv("IRCTL_SNAPSHOTTER", "copy")
    assert detect_snapshotter(tmp_path).name == "copy"
    monkeypatch.setenv("IRCTL_SNAPSHOTTER", "bogus")
    with pytest.raises(Exception, match="overlay"):
        detect_snapshotter(tmp_path)


# ---------------------------------------------------------------------------------------------- paths in a root

def test_resolve_in_root_never_leaves_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.symlink("/", root / "up")
    os.symlink("../../../../etc", root / "etc/escape")
    os.symlink("/etc/passwd", root / "abs")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    assert resolve_in_root(root, "/up/up/etc") == "etc"
    assert resolve_in_root(root, "/etc/escape/passwd") == "etc/passwd"
    assert resolve_in_root(root, "/abs") == "etc/passwd"
    assert resolve_in_root(root, "/abs", follow_final=False) == "abs"
    assert resolve_in_root(root, "../../missing/x") == "missing/x"
    with pytest.raises(OSError, match="symbolic links"):
        resolve_in_root(root, "/loop1")


@root_only
def test_layer_view_reads_through_whiteouts_and_opaque_dirs(layers: list[Path]) -> None:
    view = LayerView(layers)
    assert view.locate("etc/conf") == str(layers[1] / "etc/conf")
    assert view.locate("keep/a") == str(layers[0] / "keep/a")
    assert view.locate("gone") is None and view.locate("gone/x") is None
    assert view.locate("d/old") is None and view.locate("d/sub/deep") is None
    assert view.locate("d/new") == str(layers[1] / "d/new")
    assert resolve_in_root(view, "/keep/link") == "etc/conf"


@root_only
def test_remove_mount_stubs(layers: list[Path], tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    for d in ("proc", "etc", "mnt/a/b", "keep", "work"):
        (upper / d).mkdir(parents=True)
    (upper / "etc/hosts").touch()
    (upper / "etc/written").write_text("by the build")  # keeps /etc in the layer
    (upper / "keep/secret").touch()
    (upper / "mnt/a/b/kept").write_text("not empty: not a stub any more")
    (upper / "mnt/c").mkdir()
    removed = remove_mount_stubs(upper, layers, ["/proc", "/etc/hosts", "/keep/secret", "/mnt/a/b", "/mnt/c",
                                                 "/etc/conf", "/nothing/here"])
    assert sorted(removed) == ["etc/hosts", "keep", "keep/secret", "mnt/c", "proc"]
    assert tree(upper) == {"etc": "dir", "etc/written": "by the build", "mnt": "dir", "mnt/a": "dir",
                           "mnt/a/b": "dir", "mnt/a/b/kept": "not empty: not a stub any more", "work": "dir"}
    (upper / "work/src").mkdir()  # the executor created the working dir, and a bind was mounted on it
    (upper / "cache").mkdir()
    assert remove_mount_stubs(upper, layers, ["/work/src", "/cache"], keep=["/work/src"]) == ["cache"]
    assert (upper / "work/src").is_dir()


# ---------------------------------------------------------------------------------------------- base image

@pytest.mark.e2e
def test_busybox_layout_unpacks_with_umoci_and_inspects_with_skopeo(busybox_layout: Path, busybox_rootfs: Path,
                                                                     tmp_path: Path) -> None:
    if not (shutil.which("umoci") and shutil.which("skopeo")):
        pytest.skip("umoci/skopeo not installed")
    info = json.loads(subprocess.run(["skopeo", "inspect", f"oci:{busybox_layout}:latest"], check=True,
                                     capture_output=True, text=True).stdout)
    assert info["Layers"] and info["Env"][0].startswith("PATH=") and info["Os"] == "linux"
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{busybox_layout}:latest", str(bundle)], check=True,
                   capture_output=True)
    assert layer_tree_digest(bundle / "rootfs") == layer_tree_digest(busybox_rootfs)
    cfg = json.loads((bundle / "config.json").read_text())
    assert cfg["process"]["args"] == ["sh"]


def test_busybox_layout_bytes_are_deterministic(tmp_path: Path) -> None:
    if not Path("/bin/busybox").exists():
        pytest.skip("/bin/busybox missing (apt-get install busybox-static)")
    from tests.support.baseimage import make_busybox_layout
    a = make_busybox_layout(tmp_path / "a")
    b = make_busybox_layout(tmp_path / "b")
    assert (a / "index.json").read_bytes() == (b / "index.json").read_bytes()
    assert sorted(p.name for p in (a / "blobs/sha256").iterdir()) == sorted(p.name for p in (b / "blobs/sha256").iterdir())


# ---------------------------------------------------------------------------------------------- differential

NAMES = ["a", "b", "a/x", "a/y", "b/x", "b/x/z"]
_op = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(NAMES), st.sampled_from(["", "1", "22"])),
    st.tuples(st.just("append"), st.sampled_from(NAMES), st.just("+")),
    st.tuples(st.just("chmod"), st.sampled_from(NAMES), st.sampled_from([0o700, 0o644, 0o4755])),
    st.tuples(st.just("chown"), st.sampled_from(NAMES), st.sampled_from([0, 1000])),
    st.tuples(st.just("remove"), st.sampled_from(NAMES), st.none()),
    st.tuples(st.just("mkdir"), st.sampled_from(NAMES), st.none()),
    st.tuples(st.just("symlink"), st.sampled_from(NAMES), st.sampled_from(["/a", "../b", "x"])),
    st.tuples(st.just("rename"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
    st.tuples(st.just("link"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
    st.tuples(st.just("xattr"), st.sampled_from(NAMES), st.sampled_from([b"v", b"w"])),
)


def _apply_op(root: Path, op: tuple) -> str:
    """Apply one operation; returns an outcome tag so both snapshotters must agree on failures too."""
    kind, name, arg = op
    p = root / name
    try:
        if kind == "write":
            p.write_text(arg)
        elif kind == "append":
            with open(p, "a") as f:
                f.write(arg)
        elif kind == "chmod":
            os.chmod(p, arg, follow_symlinks=False) if not p.is_symlink() else None
        elif kind == "chown":
            os.lchown(p, arg, arg)
        elif kind == "remove":
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        elif kind == "mkdir":
            p.mkdir()
        elif kind == "symlink":
            os.symlink(arg, p)
        elif kind == "rename":
            if p.is_dir() and not p.is_symlink():
                return "skip"  # overlay without redirect_dir refuses (EXDEV); mv would copy instead
            os.rename(p, root / arg)
        elif kind == "link":
            os.link(p, root / arg, follow_symlinks=False)
        elif kind == "xattr":
            os.setxattr(p, "user.t", arg, follow_symlinks=False)
        return "ok"
    except OSError as e:
        return type(e).__name__ + str(e.errno)


@root_only
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_op, min_size=1, max_size=12), stacked=st.booleans())
def test_copy_snapshotter_matches_overlay_for_any_operations(ops: list, stacked: bool,
                                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp = tmp_path_factory.mktemp("diff")
    base = tmp / "base"
    for d in ("a", "b/x"):
        (base / d).mkdir(parents=True)
    (base / "a/x").write_text("ax")
    (base / "b/x/z").write_text("bxz")
    os.symlink("x", base / "a/y")
    lowers = [base]
    if stacked:  # a second layer deleting a/x and replacing b wholesale
        top = tmp / "top"
        (top / "a").mkdir(parents=True)
        whiteout(top / "a/x")
        (top / "b").mkdir()
        os.setxattr(top / "b", opaque_xattr(), b"y")
        (top / "b/y").write_text("by")
        lowers.append(top)
    results = {}
    for snap in SNAPSHOTTERS:
        upper = tmp / f"upper-{snap.name}"
        upper.mkdir()
        with snap().mounted(lowers, upper, tmp / f"work-{snap.name}") as root:
            outcomes = [_apply_op(root, op) for op in ops]
        results[snap.name] = (outcomes, tree(upper), layer_tree_digest(upper))
    assert results["copy"][0] == results["overlay"][0]
    assert results["copy"][1] == results["overlay"][1]
    assert results["copy"][2] == results["overlay"][2]


# ---------------------------------------------------------------------------------------------- crash recovery

@root_only
def test_the_store_unmounts_what_a_dead_build_left_mounted(layers: list[Path], tmp_path: Path) -> None:
    """The crash recovery that runs (``CacheStore.clean_stale``, at every session's start): a
    snapshot mounted by a build that was killed goes, one of a live build stays."""
    import signal
    import sys
    import textwrap

    from backend.store.cache import CacheStore

    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from backend.snapshot.overlay import OverlaySnapshotter
        from backend.store.cache import CacheStore
        with CacheStore({str(tmp_path / 'store')!r}).session() as work:
            with OverlaySnapshotter().mounted({[str(p) for p in layers]!r}, work / "upper", work / "x" / "work") as root:
                print(root, flush=True)
                time.sleep(600)
    """)
    store = CacheStore(tmp_path / "store")
    with store.session() as mine, OverlaySnapshotter().mounted(layers, mine / "upper", mine / "work") as live:
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                                 cwd=Path(__file__).parents[2])
        root = child.stdout.readline().strip()
        assert root and os.path.ismount(root)
        store.clean_stale()
        assert os.path.ismount(root)  # its owner is alive: nothing to reap
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        assert os.path.ismount(root)  # the crash left the mount behind ...
        store.clean_stale()
        assert not os.path.exists(root) and root not in _mounted_targets()  # ... the next session took it away
        left = sorted(p.name for p in (tmp_path / "store" / "tmp").iterdir())
        assert left == sorted([mine.name, f"{mine.name}.lock"])  # the dead session's work dir and lock went
        assert os.path.ismount(live)  # and left the live one alone
