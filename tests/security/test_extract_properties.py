"""Property-based confinement of the two extractors and of path resolution: whatever the archive
(names with ``..``, ``.``, absolute names, symlinks and hard links aimed anywhere, including at the
host path of a sibling directory), extraction ends in success or a clear error and nothing outside
the destination changes.  Runs as root where possible (device nodes and owners); no runtime needed."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.security.conftest import entry, tar_bytes

SETTINGS = settings(max_examples=200, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
PARTS = ["a", "b", "..", ".", "", "outside", "dest", "x"]


def _name(parts: list[str], absolute: bool) -> str:
    return ("/" if absolute else "") + "/".join(parts)


names = st.builds(_name, st.lists(st.sampled_from(PARTS), min_size=1, max_size=5), st.booleans())


def _targets(box: str):
    return st.one_of(names, st.sampled_from([box + "/outside", box + "/outside/file", box, "/", "/etc", "../../..",
                                             "../outside/file"]))


def _entries(box: str):
    one = st.one_of(
        st.builds(lambda n: entry(n, data=b"payload"), names),
        st.builds(lambda n: entry(n, "dir"), names),
        st.builds(lambda n, t: entry(n, "symlink", link=t), names, _targets(box)),
        st.builds(lambda n, t: entry(n, "hardlink", link=t), names, _targets(box)),
    )
    return st.lists(one, min_size=1, max_size=8)


def _snapshot(root: Path, skip: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == skip or skip in Path(dirpath).parents:
            dirnames[:] = []
            continue
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            if p == skip:
                continue
            st_ = os.lstat(p)
            out[str(p)] = (st_.st_mode, st_.st_size, st_.st_mtime_ns, st_.st_nlink,
                           p.read_bytes() if p.is_file() and not p.is_symlink() else None)
    return out


class Box:
    """tmp/box/{dest/, outside/file}: ``outside`` must never change."""

    def __init__(self):
        self.box = Path(tempfile.mkdtemp(prefix="irctl-box-"))
        self.dest = self.box / "dest"
        self.dest.mkdir()
        (self.box / "outside").mkdir()
        (self.box / "outside" / "file").write_text("untouched")
        self.before = _snapshot(self.box, self.dest)

    def check(self) -> None:
        assert _snapshot(self.box, self.dest) == self.before, "extraction changed something outside dest"
        for dirpath, dirnames, filenames in os.walk(self.dest):  # hard links never reach a file outside
            for n in filenames:
                p = Path(dirpath) / n
                if not p.is_symlink() and p.is_file():
                    assert p.read_bytes() != b"untouched" or os.lstat(p).st_nlink == 1

    def close(self) -> None:
        shutil.rmtree(self.box, ignore_errors=True)


BOX_PATH = "/tmp/irctl-box-placeholder"  # hypothesis draws targets before the box exists: rewritten below


def _rewrite(items, box: str):
    for it in items:
        info = it[0] if isinstance(it, tuple) else it
        info.linkname = info.linkname.replace(BOX_PATH, box)
    return items


@SETTINGS
@given(_entries(BOX_PATH))
def test_add_extraction_is_confined(items):
    from backend.fileops.copy import FileOpError
    from backend.fileops.unpack import extract_archive

    b = Box()
    try:
        path = b.box / "evil.tar"
        path.write_bytes(tar_bytes(_rewrite(items, str(b.box))))
        before = _snapshot(b.box, b.dest)
        try:
            extract_archive(str(path), str(b.dest))
        except (FileOpError, OSError):
            pass
        path.unlink()
        b.before = {k: v for k, v in before.items() if k != str(path)}
        b.check()
    finally:
        b.close()


@SETTINGS
@given(_entries(BOX_PATH))
def test_layer_extraction_is_confined(items):
    import io

    from backend.errors import LayerError
    from backend.oci.extract import extract_layer

    b = Box()
    try:
        data = tar_bytes(_rewrite(items, str(b.box)))
        try:
            extract_layer(io.BytesIO(data), "application/vnd.oci.image.layer.v1.tar", b.dest)
        except (LayerError, OSError):
            pass
        b.check()
    finally:
        b.close()


@SETTINGS
@given(st.lists(st.tuples(names, _targets("/")), max_size=6), names)
def test_resolve_in_root_never_leaves_the_root(links, path):
    from backend.fs.mountpoints import PathEscapeError, resolve_in_root

    root = Path(tempfile.mkdtemp(prefix="irctl-root-"))
    try:
        for name, target in links:
            rel = name.strip("/")
            if not rel or ".." in rel.split("/"):
                continue
            p = root / rel
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(target, p)
            except OSError:
                continue
        try:
            rel = resolve_in_root(root, path)
        except PathEscapeError:
            return
        assert ".." not in rel.split("/") and not rel.startswith("/"), rel
        full = os.path.normpath(os.path.join(root, rel))
        assert full == str(root) or full.startswith(str(root) + "/"), full
    finally:
        shutil.rmtree(root, ignore_errors=True)
