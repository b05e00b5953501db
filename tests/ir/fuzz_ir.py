"""Coverage-guided fuzzing of the IR reader with atheris (libFuzzer), outside the test suite.

    python tests/ir/fuzz_ir.py --seeds /tmp/ir-corpus        # write a seed corpus of valid files
    python tests/ir/fuzz_ir.py /tmp/ir-corpus -max_total_time=300

Property: ``load_and_validate`` either accepts the bytes — and then they are the canonical
encoding of what it returned (the decompressed payload re-encodes byte for byte) — or raises an
``IRError`` with a non-empty message.  Any other exception is a finding; keep each one as a
regression case in ``tests/ir/test_fuzz.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import atheris  # noqa: E402

with atheris.instrument_imports():
    from ir import codec, validate
    from ir.errors import IRError


def one_input(data: bytes) -> None:
    try:
        doc = validate.load_and_validate(data)
    except IRError as e:
        assert str(e)
        return
    payload, _raw = codec.load_payload(data)
    assert codec.document_bytes(doc) == payload


def write_seeds(directory: Path) -> None:
    import json

    from ir import jsonform

    directory.mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parents[2] / "spec" / "conformance" / "valid"
    for path in sorted(root.glob("*.json")):
        doc = jsonform.document_from_json(json.loads(path.read_text()))
        (directory / f"{path.stem}.irg").write_bytes(codec.dump_document(doc, compress=False))
        (directory / f"{path.stem}.zst.irg").write_bytes(codec.dump_document(doc))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--seeds"]:
        write_seeds(Path(sys.argv[2]))
    else:
        atheris.Setup(sys.argv, one_input)
        atheris.Fuzz()
