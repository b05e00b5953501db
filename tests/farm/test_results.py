"""The result format (``backend.farm.results``, spec/remote.md "Cache"): the cache action is a pure
function of the key, a result survives the trip to the server and back, the spec's example is one,
and anything else a server could hold is a ``ResultError`` (never another exception)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from backend.farm.results import RESULT_PATH, ResultError, cache_action, decode_result, encode_result, \
    parse_document
from backend.oci.pull import RemoteLayer
from backend.reapi.digests import digest_of, from_proto, to_proto
from backend.reapi.protos import remote_execution_pb2 as pb
from backend.store.records import Output

SPEC = Path(__file__).resolve().parents[2] / "spec" / "remote.md"
H = "sha256:" + "1" * 64
LID, BLOB, DIFF, IDENT = ("sha256:" + c * 64 for c in "3456")
LAYER = RemoteLayer(BLOB, "application/vnd.oci.image.layer.v1.tar+gzip", 812, DIFF, "sde=1700000000")


class Server:
    """The CAS side of a client, from a dict (what decode_result reads result.json through)."""

    def __init__(self, blobs: dict) -> None:
        self.blobs = blobs

    def read_bytes(self, digest, *, cap):
        assert digest[1] <= cap
        return self.blobs[digest]


def test_the_cache_action_is_a_pure_function_of_the_key() -> None:
    action, blobs = cache_action(H)
    assert cache_action(H) == (action, blobs)
    assert cache_action("sha256:" + "2" * 64)[0] != action
    decoded = pb.Action.FromString(blobs[action])
    command = pb.Command.FromString(blobs[from_proto(decoded.command_digest)])
    assert list(command.arguments) == ["irctl-step", "v1", H]
    assert from_proto(decoded.input_root_digest) == digest_of(b"") and blobs[digest_of(b"")] == b""
    # the bytes, spelled out in protobuf's wire format (field tag, length, value) as spec/remote.md
    # describes them: another client that writes the same messages files results where irctl looks
    command = b"".join(_field(1, arg.encode()) for arg in ["irctl-step", "v1", H])
    empty = hashlib.sha256(b"").hexdigest().encode()
    action_bytes = (_field(1, _field(1, hashlib.sha256(command).hexdigest().encode()) + bytes([0x10, len(command)]))
                    + _field(2, _field(1, empty)))
    assert blobs[action] == action_bytes and action == digest_of(action_bytes)
    # pinned: a change here orphans every result every server holds (bump "v1" instead)
    assert action == ("sha256:75f59be3fadea24926e980f0206d611194aff3fd564b1f2a8baa3125ed9f8188", 138)


def _field(number: int, value: bytes) -> bytes:
    """A length-delimited protobuf field of fewer than 128 bytes."""
    assert len(value) < 128
    return bytes([number << 3 | 2, len(value)]) + value


def test_a_result_survives_the_trip() -> None:
    outputs = [Output(IDENT, (LID,), None, (1700000000000000000,)), Output(IDENT, (), None, ())]
    result, blobs = encode_result(outputs, {LID: LAYER})
    assert result.exit_code == 0
    assert [f.path for f in result.output_files] == [RESULT_PATH, "irctl/layers/" + "4" * 64]
    assert from_proto(result.output_files[1].digest) == (BLOB, 812)
    back = pb.ActionResult.FromString(result.SerializeToString())
    assert decode_result(Server(blobs), back) == (outputs, {LID: LAYER})


def test_the_spec_example_is_a_result() -> None:
    example = re.search(r"```json result\n(.*?)```", SPEC.read_text(encoding="utf-8"), re.S)[1]
    outputs, layers = parse_document(example.encode())
    assert outputs == [Output("sha256:" + "2" * 64, (LID,), None, (1700000000000000000,))]
    assert layers == {LID: LAYER}


GOOD = {"format": "irctl.result.v1", "outputs": [{"identity": IDENT, "layers": [LID], "created": [None]}],
        "layers": {LID: {"blob": BLOB, "size": 812, "media_type": LAYER.media_type, "diff_id": DIFF,
                         "variant": "sde=None"}}}


def _with(path: str, value) -> bytes:
    doc = json.loads(json.dumps(GOOD))
    *parents, last = path.split("/")
    node = doc
    for p in parents:
        node = node[int(p) if p.isdigit() else p]
    if value is KeyError:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return json.dumps(doc).encode()


@pytest.mark.parametrize("data", [
    b"not json", b"[" * 50_000, b"[]", json.dumps({**GOOD, "format": "irctl.result.v2"}).encode(),
    json.dumps({**GOOD, "extra": 1}).encode(),
    _with("outputs", []), _with("outputs", "x"), _with("outputs/0/identity", 1), _with("outputs/0/identity", "sha256:X"),
    _with("outputs/0/layers", [LID, LID.replace("3", "9")]), _with("outputs/0/created", [1.5]),
    _with("outputs/0/created", [True]), _with("outputs/0/created", [-1]), _with("outputs/0/created", []),
    _with("outputs/0/image", None), _with(f"layers/{LID}/size", "812"), _with(f"layers/{LID}/size", -1),
    _with(f"layers/{LID}/media_type", "text/html"), _with(f"layers/{LID}/variant", "sde=1;rm -rf /"),
    _with(f"layers/{LID}/blob", KeyError), _with("layers/sha256:" + "8" * 64, GOOD["layers"][LID]),
    _with("layers", []), _with("outputs/0", None),
])
def test_anything_else_is_a_result_error(data: bytes) -> None:
    with pytest.raises(ResultError):
        parse_document(data)


def test_a_result_without_its_document_or_with_a_failure_is_refused() -> None:
    doc = json.dumps(GOOD).encode()
    files = [pb.OutputFile(path=RESULT_PATH, digest=to_proto(digest_of(doc)))]
    server = Server({digest_of(doc): doc})
    assert decode_result(server, pb.ActionResult(output_files=files))[0] == [Output(IDENT, (LID,), None, ())]
    for result in (pb.ActionResult(exit_code=1, output_files=files), pb.ActionResult(),
                   pb.ActionResult(output_files=files * 2),
                   pb.ActionResult(output_files=[pb.OutputFile(path=RESULT_PATH, digest=pb.Digest(hash="x" * 64))]),
                   pb.ActionResult(output_files=[pb.OutputFile(path=RESULT_PATH, digest=pb.Digest(
                       hash="0" * 64, size_bytes=(4 << 20) + 1))])):
        with pytest.raises(ResultError):
            decode_result(server, result)
