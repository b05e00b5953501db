"""The solver compresses the target image's layers while later steps run (``backend.oci.precompress``)."""

from __future__ import annotations

import sqlite3
import time

import pytest

from backend.store.blobs import BlobStore
from backend.errors import BuildError
from backend.events import Recorder
from backend.oci.precompress import Precompress
from tests.e2e.conftest import Solving

pytestmark = pytest.mark.e2e
GZIP = (Precompress("gzip"),)


def rows(solving: Solving) -> set[str]:
    with sqlite3.connect(solving.cache / "blobs.db") as db:
        return {r[0] for r in db.execute("SELECT diff_id FROM compressed")}


def diff_id_of(solving: Solving, layer) -> str:
    hint = "sha256:" + layer.name
    return BlobStore(solving.cache).lookup_layer_alias(hint, "sde=None") or hint


def test_a_layer_is_compressed_before_the_last_step_runs(solving: Solving) -> None:
    base = solving.base()
    first = base.with_meta("first").run(["sh", "-c", "seq 1 200000 > /a"])
    last = first.with_meta("last").run(["sh", "-c", "echo b > /b"])
    seen: dict[str, set[str]] = {}
    record = Recorder()

    def on_event(e) -> None:
        record(e)
        if e.kind == "started" and e.description == "last" and "rows" not in seen:
            # the last step cannot run until this returns: wait for the first step's blob
            deadline = time.monotonic() + 30
            while len(rows(solving)) < 2 and time.monotonic() < deadline:  # busybox's + the first step's
                time.sleep(0.02)
            seen["rows"] = rows(solving)

    res = solving.solve(last, precompress=GZIP, on_event=on_event)
    layers = res["default"].layers
    assert diff_id_of(solving, layers[-2]) in seen["rows"]
    assert diff_id_of(solving, layers[-1]) not in seen["rows"]


def test_nothing_is_compressed_without_a_need(solving: Solving) -> None:
    base = solving.base()
    solving.solve(base.run(["sh", "-c", "seq 1 1000 > /a"]))
    assert len(rows(solving)) == 1  # only busybox's own blob


def test_a_failed_build_stops_and_joins_the_worker(solving: Solving) -> None:
    import threading

    base = solving.base()
    big = base.run(["sh", "-c", "head -c 40000000 /dev/urandom > /a"])
    with pytest.raises(BuildError):
        solving.solve(big.run(["sh", "-c", "exit 4"]), precompress=GZIP)
    assert not [t for t in threading.enumerate() if t.name == "precompress"]
    tmp = solving.cache / "tmp"
    assert not [p for p in tmp.iterdir() if p.name.startswith(("blob-", "ingest-"))]
