"""A step's result as a REAPI server holds it, both ways, and the cache action it is filed under.

One format serves the remote cache and remote execution: an ``ActionResult`` whose output file
``irctl/result.json`` says what each output of the step is (identity, layer ids, when each layer was
made) and where each layer's blob is in the CAS; each such blob is also an output file of its own
(``irctl/layers/<hex>``), so a server that keeps what a result names keeps the layers too.

A result comes from a server anyone with write access to it may have filled: it is read capped and
parsed strictly (exact keys, exact types, bounded sizes), and anything else is a ``ResultError`` —
a miss with a warning, never a traceback.  What it promises is checked later, when a layer is
fetched (``backend.oci.pull``: blob digest, tar diff_id, tree), and when the solver takes its
outputs (``backend.solve.task``: identities as this machine makes them).  See spec/remote.md.
"""

from __future__ import annotations

import json
import re

from backend.oci.compression import MEDIA_TYPES
from backend.oci.pull import RemoteLayer
from backend.reapi.digests import EMPTY, MAX_SIZE, Digest, digest_of, from_proto, message_digest, to_proto
from backend.reapi.errors import RemoteError
from backend.reapi.protos import remote_execution_pb2 as pb
from backend.store.records import Output

FORMAT = "irctl.result.v1"
RESULT_PATH = "irctl/result.json"
LAYERS_DIR = "irctl/layers/"
MAX_RESULT = 4 << 20  # bytes of result.json a reader accepts
MAX_OUTPUTS = 64  # outputs of one step (an exec op's mounts, at most)
MAX_LAYERS = 4096  # layers of one output, and descriptors of one result
MAX_TIME = 1 << 63  # ns: a step time a clock (and an image's history) can show, as a --cache-from cache's
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
VARIANT = re.compile(r"(sde=(None|[0-9]{1,19}))?")  # the SOURCE_DATE_EPOCH a layer's tar was written with
EMPTY_DIR: Digest = EMPTY  # the empty Directory message serialises to no bytes
_OUTPUT_KEYS = {"identity", "layers", "created"}
_LAYER_KEYS = {"blob", "size", "media_type", "diff_id", "variant"}


class ResultError(RemoteError):
    """A result on the server is not one irctl can use; ``str()`` says why (a warning, then a miss;
    the caller names the server)."""

    def __init__(self, what: str) -> None:
        Exception.__init__(self, what)
        self.url, self.what, self.code = "", what, ""


def cache_action(key: str) -> tuple[Digest, dict[Digest, bytes]]:
    """The action a step's result is filed under, a pure function of its cache key ``key``, and the
    blobs (Action, Command, empty input root) a server may want to hold beside the result."""
    command, command_digest = message_digest(pb.Command(arguments=["irctl-step", "v1", key]))
    action, action_digest = message_digest(pb.Action(command_digest=to_proto(command_digest),
                                                     input_root_digest=to_proto(EMPTY_DIR)))
    return action_digest, {action_digest: action, command_digest: command, EMPTY_DIR: b""}


def encode_result(outputs: list[Output] | tuple[Output, ...], layers: dict[str, RemoteLayer]
                  ) -> tuple[pb.ActionResult, dict[Digest, bytes]]:
    """The ``ActionResult`` for a step's ``outputs`` whose layers are the blobs ``layers`` describes
    (the caller has them in the CAS), and the blob to upload with it (result.json)."""
    named = dict.fromkeys(lid for o in outputs for lid in o.layers)
    missing = [lid for lid in named if lid not in layers]
    if missing:
        raise ValueError(f"no blob for layer {missing[0]}")
    doc = {"format": FORMAT,
           "outputs": [{"identity": o.identity, "layers": list(o.layers),
                        "created": list(o.created) if o.created else [None] * len(o.layers)} for o in outputs],
           "layers": {lid: {"blob": x.blob, "size": x.size, "media_type": x.media_type, "diff_id": x.diff_id,
                            "variant": x.variant} for lid in named for x in [layers[lid]]}}
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    digest = digest_of(data)
    blobs = sorted({(x.blob, x.size) for lid in named for x in [layers[lid]]})
    files = [pb.OutputFile(path=RESULT_PATH, digest=to_proto(digest))]
    files += [pb.OutputFile(path=LAYERS_DIR + blob.removeprefix("sha256:"), digest=to_proto((blob, size)))
              for blob, size in blobs]
    return pb.ActionResult(exit_code=0, output_files=files), {digest: data}


def decode_result(remote, result: pb.ActionResult) -> tuple[list[Output], dict[str, RemoteLayer]]:
    """The outputs and layer blobs a server's ``result`` names (result.json read through ``remote``,
    capped and hash-checked); ``ResultError`` when it is not a well-formed irctl result."""
    if result.exit_code != 0:
        raise ResultError(f"its exit code is {result.exit_code}")
    files = [f for f in result.output_files if f.path == RESULT_PATH]
    if len(files) != 1:
        raise ResultError(f"it has {len(files) or 'no'} {RESULT_PATH} output files")
    try:
        digest = from_proto(files[0].digest)
    except ValueError as e:
        raise ResultError(f"{RESULT_PATH}: {e}") from None
    if digest[1] > MAX_RESULT:
        raise ResultError(f"{RESULT_PATH} is {digest[1]} bytes, more than {MAX_RESULT}")
    return parse_document(remote.read_bytes(digest, cap=MAX_RESULT))


def parse_document(data: bytes) -> tuple[list[Output], dict[str, RemoteLayer]]:
    """result.json, strictly: exactly the keys and types of the format, or ``ResultError``."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise ResultError(f"{RESULT_PATH} is not JSON") from None
    _keys(doc, {"format", "outputs", "layers"}, RESULT_PATH)
    if doc["format"] != FORMAT:
        raise ResultError(f"{RESULT_PATH}: format {str(doc['format'])[:40]!r}, not {FORMAT!r}")
    layers = _descriptors(doc["layers"])
    outs = doc["outputs"]
    if not isinstance(outs, list) or not 0 < len(outs) <= MAX_OUTPUTS:
        raise ResultError(f"{RESULT_PATH}: outputs is not a list of 1 to {MAX_OUTPUTS} outputs")
    outputs = [_output(o, f"outputs[{i}]", layers) for i, o in enumerate(outs)]
    unnamed = layers.keys() - {lid for o in outputs for lid in o.layers}
    if unnamed:
        raise ResultError(f"{RESULT_PATH}: layers.{min(unnamed)} is named by no output")
    return outputs, layers


def _keys(value: object, keys: set[str], where: str) -> None:
    if not isinstance(value, dict) or set(value) != keys:
        raise ResultError(f"{RESULT_PATH}: {where} is not an object with exactly {', '.join(sorted(keys))}")


def _digest(value: object, where: str) -> str:
    if not isinstance(value, str) or not DIGEST.fullmatch(value):
        raise ResultError(f"{RESULT_PATH}: {where} is not a sha256 digest")
    return value


def _count(value: object, where: str, limit: int = MAX_SIZE + 1) -> int:
    if type(value) is not int or not 0 <= value < limit:
        raise ResultError(f"{RESULT_PATH}: {where} is not an integer from 0 to {limit - 1}")
    return value


def _media_type(value: object, where: str) -> str:
    if value not in MEDIA_TYPES.values():
        raise ResultError(f"{RESULT_PATH}: {where} is not an OCI layer media type")
    return value  # type: ignore[return-value]


def _variant(value: object, where: str) -> str:
    if not isinstance(value, str) or not VARIANT.fullmatch(value):
        raise ResultError(f"{RESULT_PATH}: {where} is not sde=N, sde=None or empty")
    return value


def _descriptors(value: object) -> dict[str, RemoteLayer]:
    if not isinstance(value, dict) or len(value) > MAX_LAYERS:
        raise ResultError(f"{RESULT_PATH}: layers is not an object of at most {MAX_LAYERS} descriptors")
    out = {}
    for lid, d in value.items():
        where = f"layers.{_digest(lid, 'a key of layers')}"
        _keys(d, _LAYER_KEYS, where)
        out[lid] = RemoteLayer(_digest(d["blob"], f"{where}.blob"), _media_type(d["media_type"], f"{where}.media_type"),
                               _count(d["size"], f"{where}.size"), _digest(d["diff_id"], f"{where}.diff_id"),
                               _variant(d["variant"], f"{where}.variant"))
    return out


def _output(value: object, where: str, layers: dict[str, RemoteLayer]) -> Output:
    _keys(value, _OUTPUT_KEYS, where)
    assert isinstance(value, dict)
    ids, created = value["layers"], value["created"]
    if not isinstance(ids, list) or len(ids) > MAX_LAYERS:
        raise ResultError(f"{RESULT_PATH}: {where}.layers is not a list of at most {MAX_LAYERS} layer ids")
    for i, lid in enumerate(ids):
        if _digest(lid, f"{where}.layers[{i}]") not in layers:
            raise ResultError(f"{RESULT_PATH}: {where}.layers[{i}] has no descriptor in layers")
    if not isinstance(created, list) or len(created) != len(ids):
        raise ResultError(f"{RESULT_PATH}: {where}.created is not a list as long as its layers")
    for i, t in enumerate(created):
        if t is not None:
            _count(t, f"{where}.created[{i}]", MAX_TIME)  # (the export writes it as a date)
    times = tuple(created) if any(t is not None for t in created) else ()
    return Output(_digest(value["identity"], f"{where}.identity"), tuple(ids), None, times)
