"""What the ``--remote-cache`` tests share: which steps a ``--progress plain`` build ran, the warnings
it gave about the server, the keys a machine's store filed, the results a server holds for them,
and a hostile writer's way of filing a result.json under a key."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from backend.farm.results import RESULT_PATH, cache_action
from backend.reapi.client import Remote
from backend.reapi.digests import to_proto
from backend.reapi.protos import remote_execution_pb2 as pb

ENV = {"SOURCE_DATE_EPOCH": "1700000000"}


def steps(stderr: str) -> dict[str, str]:
    """RUN/COPY step -> DONE (it ran) or CACHED (a hit)."""
    names: dict[str, str] = {}
    out = {}
    for line in stderr.splitlines():
        if m := re.match(r"#(\d+) \[[^\]]*\] (.*)", line):
            names.setdefault(m[1], m[2])
        elif (m := re.match(r"#(\d+) (DONE|CACHED)", line)) and names.get(m[1], "").startswith(("RUN ", "COPY ")):
            out[names[m[1]]] = m[2]
    return out


def ran(stderr: str) -> list[str]:
    return [name for name, how in steps(stderr).items() if how == "DONE"]


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "warning: --remote-cache" in line]


def keys(machine: Path) -> list[str]:
    """The cache keys a build filed in the store at ``machine``."""
    with sqlite3.connect(machine / "index.db") as db:
        return [k for (k,) in db.execute("SELECT key FROM results")]


def uploaded(remote: Remote, machine: Path) -> dict[str, pb.ActionResult]:
    """The results the server holds for the keys of ``machine``'s store."""
    found = {}
    for key in keys(machine):
        result = remote.get_action_result(cache_action(key)[0])
        if result is not None:
            found[key] = result
    return found


def rewrite(remote: Remote, key: str, doc: bytes) -> None:
    """File ``doc`` as the result.json of ``key``'s cache action (a hostile writer of the cache)."""
    digest = remote.upload_bytes(doc)
    result = pb.ActionResult(exit_code=0, output_files=[pb.OutputFile(path=RESULT_PATH, digest=to_proto(digest))])
    action, blobs = cache_action(key)
    for data in blobs.values():
        remote.upload_bytes(data)
    remote.update_action_result(action, result)
