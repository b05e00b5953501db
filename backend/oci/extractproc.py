"""Unpacking a big layer in a process of its own.

Unpacking is Python work (a tar header, then a file, at a time) that holds the interpreter's lock:
the layers a cache hit or a pull brings, unpacked by threads of one process, share one core however
many the machine has.  A layer whose blob is big enough to repay starting a process (~0.1 s) is
unpacked by ``python -m backend.oci.extractproc`` instead: the same ``extract_layer`` (and, for a
shared cache's layer, the tree digest with extraction's file notes), reading the blob on its stdin
and answering in one JSON line.  The caller checks the answer exactly as an in-process extraction's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO

from backend.errors import LayerError
from backend.oci.extract import extract_layer
from backend.snapshot.layertree import layer_tree_digest

MIN_BLOB_BYTES = 4 << 20  # smaller blobs unpack faster than a process starts
_CODE_ROOT = str(Path(__file__).resolve().parents[2])  # the child runs this very code


def extract_elsewhere(blob: BinaryIO, media_type: str, dest: Path, *, tree: bool) -> tuple[str, str | None]:
    """Unpack ``blob`` (a file with a descriptor) into ``dest`` in a child process: (the tar's
    diff_id, the tree digest of ``dest`` if ``tree``).  A failure raises ``LayerError`` with the
    child's one-line reason."""
    # -P: never import from the working directory (it may be a build context)
    cmd = [sys.executable, "-P", "-m", "backend.oci.extractproc", media_type, os.fspath(dest)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_CODE_ROOT, os.environ.get("PYTHONPATH")])))
    p = subprocess.run(cmd + (["--tree"] if tree else []), stdin=blob, capture_output=True, env=env, cwd="/")
    if p.returncode != 0:
        lines = p.stderr.decode(errors="replace").strip().splitlines()
        raise LayerError(lines[-1] if lines else f"the unpacking process exited with status {p.returncode}")
    try:
        answer = json.loads(p.stdout)
        return answer["diff_id"], answer["tree"]
    except (ValueError, KeyError, TypeError):
        raise LayerError("the unpacking process gave no answer") from None


def main(argv: list[str]) -> int:
    media_type, dest, *flags = argv
    tree = "--tree" in flags
    try:
        res = extract_layer(sys.stdin.buffer, media_type, dest, note_files=tree)
        digest = layer_tree_digest(Path(dest), known=res.files) if tree else None
    except (LayerError, OSError) as e:
        print(str(e).replace("\n", " "), file=sys.stderr)
        return 1
    print(json.dumps({"diff_id": res.diff_id, "tree": digest}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
