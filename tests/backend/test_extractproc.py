"""Unpacking in a child process (``backend.oci.extractproc``) answers as ``extract_layer`` and
``layer_tree_digest`` do in process, reports a bad archive in one line, and runs irctl's own code
whatever directory the build runs in."""

from __future__ import annotations

import gzip
import io
import os

import pytest

from backend.errors import LayerError
from backend.oci.extract import extract_layer
from backend.oci.extractproc import extract_elsewhere
from backend.snapshot.layertree import layer_tree_digest
from tests.security.conftest import entry, tar_bytes

MT_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
TAR = tar_bytes([entry("etc", "dir"), entry("etc/os", data=b"irctl\n" * 1000), entry("bin", "symlink", link="usr/bin"),
                 entry("etc/hard", "hardlink", link="etc/os")])


def test_same_answer_as_in_process(tmp_path):
    blob = tmp_path / "blob"
    blob.write_bytes(gzip.compress(TAR))
    with open(blob, "rb") as f:
        diff_id, tree = extract_elsewhere(f, MT_GZIP, tmp_path / "child", tree=True)
    res = extract_layer(io.BytesIO(gzip.compress(TAR)), MT_GZIP, tmp_path / "here")
    assert (diff_id, tree) == (res.diff_id, layer_tree_digest(tmp_path / "here"))
    assert layer_tree_digest(tmp_path / "child") == tree
    with open(blob, "rb") as f:
        assert extract_elsewhere(f, MT_GZIP, tmp_path / "again", tree=False) == (diff_id, None)


def test_a_bad_archive_is_one_located_line(tmp_path):
    blob = tmp_path / "blob"
    blob.write_bytes(tar_bytes([entry("../escape", data=b"x")]))
    with open(blob, "rb") as f, pytest.raises(LayerError) as e:
        extract_elsewhere(f, "application/vnd.oci.image.layer.v1.tar", tmp_path / "o", tree=True)
    assert "refusing" in str(e.value) and "\n" not in str(e.value) and "Traceback" not in str(e.value)


def test_the_working_directory_is_not_imported_from(tmp_path, monkeypatch):
    """A build context holding a ``backend`` package must not stand in for irctl's."""
    evil = tmp_path / "ctx" / "backend" / "oci"
    evil.mkdir(parents=True)
    for d in (evil.parent, evil):
        (d / "__init__.py").write_text("")
    (evil / "extractproc.py").write_text("import sys; print('{\"diff_id\": \"evil\", \"tree\": null}'); sys.exit(0)\n")
    monkeypatch.chdir(tmp_path / "ctx")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [".", os.environ.get("PYTHONPATH")])))
    blob = tmp_path / "blob"
    blob.write_bytes(gzip.compress(TAR))
    with open(blob, "rb") as f:
        diff_id, _ = extract_elsewhere(f, MT_GZIP, tmp_path / "o", tree=False)
    assert diff_id.startswith("sha256:")
