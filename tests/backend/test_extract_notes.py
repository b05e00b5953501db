"""The file digests extraction notes (``extract_layer(note_files=True)``) stand in for reading the
files back when a shared cache's layer is checked against its tree digest: they must name every
file as it is on disk, whatever the archive did to its paths (replaced, linked, whited out), and
the check must still refuse a blob whose tree is not the layer it is named by."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.errors import LayerError
from backend.oci.extract import extract_layer
from backend.snapshot.layertree import layer_tree_digest
from tests.security.conftest import entry, tar_bytes

MT_TAR = "application/vnd.oci.image.layer.v1.tar"
MT_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
NAMES = ["a", "b", "a/x", "a/y", "b/x", ".wh.a", "a/.wh.x", "a/.wh..wh..opq"]


def _files(root: Path) -> dict[str, os.stat_result]:
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for n in filenames:
            p = Path(dirpath) / n
            st_ = os.lstat(p)
            if stat.S_ISREG(st_.st_mode):
                out[str(p.relative_to(root))] = st_
    return out


def _true_notes(root: Path, notes: dict) -> None:
    """Every note whose stat matches the file there gives that file's real sha256 (so a stale note
    can never stand in for changed content)."""
    for rel, st_ in _files(root).items():
        note = notes.get(rel)
        if note is not None and note[1:] == (st_.st_size, st_.st_mtime_ns, st_.st_ctime_ns):
            assert note[0] == hashlib.sha256((root / rel).read_bytes()).hexdigest(), rel


def test_notes_cover_every_file_and_name_the_same_tree(tmp_path):
    data = tar_bytes([entry("etc", "dir"), entry("etc/conf", data=b"one"), entry("etc/conf", data=b"two, longer"),
                      entry("bin", "dir"), entry("bin/tool", data=b"\x7fELF" * 5000, mode=0o755),
                      entry("bin/alias", "hardlink", link="bin/tool"), entry("lib", "symlink", link="bin"),
                      entry("empty", data=b"")])
    res = extract_layer(io.BytesIO(gzip.compress(data)), MT_GZIP, tmp_path / "o", note_files=True)
    files = _files(tmp_path / "o")
    assert set(files) == {"etc/conf", "bin/tool", "bin/alias", "empty"}
    assert res.files is not None
    for rel, st_ in files.items():  # all noted with their stat now: the tree check reads none of them
        assert res.files[rel][1:] == (st_.st_size, st_.st_mtime_ns, st_.st_ctime_ns), rel
    assert res.files["etc/conf"][0] == hashlib.sha256(b"two, longer").hexdigest()
    assert layer_tree_digest(tmp_path / "o", known=res.files) == layer_tree_digest(tmp_path / "o")


def test_no_notes_unless_asked(tmp_path):
    res = extract_layer(io.BytesIO(tar_bytes([entry("f", data=b"x")])), MT_TAR, tmp_path / "o")
    assert res.files is None


def _entries():
    one = st.one_of(
        st.builds(lambda n, d: entry(n, data=d), st.sampled_from(NAMES), st.sampled_from([b"", b"p", b"q", b"pp"])),
        st.builds(lambda n: entry(n, "dir"), st.sampled_from(NAMES)),
        st.builds(lambda n, t: entry(n, "symlink", link=t), st.sampled_from(NAMES), st.sampled_from(NAMES)),
        st.builds(lambda n, t: entry(n, "hardlink", link=t), st.sampled_from(NAMES), st.sampled_from(NAMES)),
    )
    return st.lists(one, min_size=1, max_size=10)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(_entries())
@pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts are char devices: root only")
def test_notes_never_change_the_tree_digest(items):
    dest = Path(tempfile.mkdtemp(prefix="irctl-notes-"))
    try:
        try:
            res = extract_layer(io.BytesIO(tar_bytes(items)), MT_TAR, dest / "o", note_files=True)
        except (LayerError, OSError):
            return
        assert res.files is not None
        _true_notes(dest / "o", res.files)
        assert layer_tree_digest(dest / "o", known=res.files) == layer_tree_digest(dest / "o")
    finally:
        shutil.rmtree(dest, ignore_errors=True)
