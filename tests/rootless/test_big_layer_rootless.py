"""Rootless, a base layer big enough to be unpacked in a process of its own
(``backend.oci.extractproc``): the child runs in the build's user namespace, so the files keep their
owners and a step sees them."""

from __future__ import annotations

import hashlib
import os

from backend.oci.extractproc import MIN_BLOB_BYTES
from tests.security.conftest import entry, make_layout, tar_bytes


def test_a_big_base_layer_unpacks_rootless(user_cli):
    data = os.urandom(MIN_BLOB_BYTES + (1 << 20))  # incompressible: the gzipped blob stays above the limit
    owned = entry("data/blob", data=data)
    owned[0].uid = owned[0].gid = 1000
    layout = make_layout(user_cli.root / "base", [tar_bytes([entry("data", "dir"), owned])])
    ctx = user_cli.root / "ctx-big"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM base\nRUN sha256sum /data/blob > /sum && stat -c %u:%g /data/blob >> /sum\n")
    user_cli.chown(user_cli.root)
    out = user_cli.root / "out-big"
    res = user_cli.run("build", str(ctx), "--build-context", f"base=oci-layout://{layout}:latest",
                       "--output", f"type=local,dest={out}")
    assert res.returncode == 0, res.stderr
    assert (out / "sum").read_text() == f"{hashlib.sha256(data).hexdigest()}  /data/blob\n1000:1000\n"
