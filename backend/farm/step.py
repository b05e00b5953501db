"""A remote exec step: the envelope a client sends a REAPI server for one exec op, and its reading.

An exec step becomes a REAPI action whose input root holds ``irctl/step.msgpack`` (the op, the
layer ids of each of its inputs and every such layer's blob) and the layer blobs themselves under
``irctl/layers/``, so a generic server sees every blob the action reads and keeps it.  The bytes
are deterministic (sorted keys, canonical op bytes, protobufs serialised deterministically): the
same step sent twice is the same action digest.  spec/remote.md ("Execution") is its contract.

The reading is as strict as every IR reader: a worker runs code a client sent, so what it refuses
a client never sends (``why_local``: one rule for both sides), and anything malformed is one
``StepError`` line, never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from ir import ops as irops
from ir.codec import canonical_bytes

from backend.errors import BackendError
from backend.oci.compression import MEDIA_TYPES
from backend.oci.pull import RemoteLayer
from backend.reapi.digests import Digest, digest_of, message_digest, to_proto
from backend.reapi.protos import remote_execution_pb2 as pb

FORMAT = "irctl.step.v1"
MAX_STEP_BYTES = 16 << 20
MAX_DESCRIPTION = 4096  # characters: a progress line, not a payload
STEP_PATH = "irctl/step.msgpack"
RESULT_PATH = "irctl/result.json"
COMMAND = ("irctl-worker-step", STEP_PATH)
NETWORKS = ("default", "none")  # what a worker gives a step; host never leaves this machine
_HEX = frozenset("0123456789abcdef")


class StepError(BackendError):
    """A step envelope a worker does not run: malformed, or asking for what stays on the client."""


@dataclass(frozen=True)
class RemoteStep:
    """One exec op as a worker runs it."""

    op: irops.Op  # the exec op, inputs included (their refs only name it; ``inputs`` says what they are)
    inputs: tuple[tuple[str, ...], ...]  # per op input: its layer ids, bottom first
    layers: dict[str, RemoteLayer]  # every layer id above -> its blob in the CAS
    network: str  # "default" (a private network with outbound access) or "none": ``--network`` applied
    description: str  # the step's progress name (for the worker's log)
    key: str  # the client's cache key of the step (the worker's log; results are filed by the client)


def why_local(op: irops.Op, network: str) -> str | None:
    """Why this exec op must run where the build runs, not on a worker; None when it may go.  A
    secret or an ssh agent never leaves the client (the CAS and the action cache would keep them),
    and what a worker would have to grant (the host's network, all capabilities) is the client's
    user's to grant on their own machine only."""
    ex = op.exec
    if ex is None:
        return f"a {op.kind} op is not a process"
    for m in ex.mounts:
        if m.secret is not None or m.type == "secret":
            return f"it mounts a secret at {m.target}"
        if m.ssh is not None or m.type == "ssh":
            return f"it mounts an ssh agent at {m.target}"
    if network not in NETWORKS:
        return "it uses the host's network" if network == "host" else f"it asks for network {network!r}"
    if ex.security != "sandbox":
        return f"it asks for security={ex.security}"
    return None


# -- the wire form ----------------------------------------------------------------------------------

class _Layer(msgspec.Struct, forbid_unknown_fields=True):
    blob: str
    media_type: str
    size: int
    diff_id: str
    variant: str


class _Step(msgspec.Struct, forbid_unknown_fields=True):
    format: str
    op: bytes
    inputs: list[list[str]]
    layers: dict[str, _Layer]
    network: str
    description: str
    key: str


_encode = msgspec.msgpack.Encoder(order="sorted").encode
_decode_step = msgspec.msgpack.Decoder(_Step).decode
_decode_op = msgspec.msgpack.Decoder(irops.Op).decode


def encode_step(step: RemoteStep) -> bytes:
    """``step.msgpack``: a msgpack map, keys sorted (see spec/remote.md)."""
    return _encode(_Step(format=FORMAT, op=canonical_bytes(step.op), inputs=[list(i) for i in step.inputs],
                         layers={lid: _Layer(x.blob, x.media_type, x.size, x.diff_id, x.variant)
                                 for lid, x in sorted(step.layers.items())},
                         network=step.network, description=step.description, key=step.key))


def decode_step(data: bytes) -> RemoteStep:
    """The step ``data`` (``step.msgpack``) names, checked as far as it can be without the graph:
    the worker still applies ``ir.validate.check_op`` to the op.  Raises ``StepError``."""
    if len(data) > MAX_STEP_BYTES:
        raise StepError(f"step.msgpack is {len(data)} bytes, more than {MAX_STEP_BYTES}")
    try:
        wire = _decode_step(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise StepError(f"step.msgpack is not an irctl step: {_quoted(e)}") from None
    if wire.format != FORMAT:
        raise StepError(f"step.msgpack: format {wire.format[:80]!r} is not {FORMAT!r} (a newer irctl's?)")
    try:
        op = _decode_op(wire.op)
        same = canonical_bytes(op) == wire.op
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError) as e:
        raise StepError(f"step.msgpack: op is not an IR op: {_quoted(e)}") from None
    kinds = [k for k in irops.OP_KINDS if getattr(op, k) is not None]
    if not same or len(kinds) != 1:
        raise StepError("step.msgpack: op is not in canonical form")
    why = why_local(op, wire.network)
    if why is not None:
        raise StepError(f"step.msgpack: refused: {why}")
    if len(wire.inputs) != len(op.inputs):
        raise StepError(f"step.msgpack: {len(wire.inputs)} inputs for an op that has {len(op.inputs)}")
    if not _is_digest(wire.key):
        raise StepError("step.msgpack: key is not a sha256 digest")
    if len(wire.description) > MAX_DESCRIPTION:
        raise StepError(f"step.msgpack: description longer than {MAX_DESCRIPTION} characters")
    layers: dict[str, RemoteLayer] = {}
    for lid, x in wire.layers.items():
        if not (_is_digest(lid) and _is_digest(x.blob) and _is_digest(x.diff_id)):
            raise StepError(f"step.msgpack: layer {lid[:80]!r}: not a sha256 digest")
        if x.media_type not in MEDIA_TYPES.values() or x.size < 0 or len(x.variant) > 64:
            raise StepError(f"step.msgpack: layer {lid}: bad media type, size or variant")
        layers[lid] = RemoteLayer(x.blob, x.media_type, x.size, x.diff_id, x.variant)
    for i, ids in enumerate(wire.inputs):
        for lid in ids:
            if lid not in layers:
                raise StepError(f"step.msgpack: inputs[{i}]: layer {lid[:80]!r} has no descriptor")
    return RemoteStep(op, tuple(tuple(i) for i in wire.inputs), layers, wire.network, wire.description,
                      wire.key)


def _quoted(e: Exception) -> str:
    """A decoder's message, which may quote the hostile bytes: escaped and cut, so it stays one line."""
    return ascii(str(e))[1:-1][:300]


def _is_digest(text: str) -> bool:
    return len(text) == 71 and text.startswith("sha256:") and _HEX.issuperset(text[7:])


# -- the action -------------------------------------------------------------------------------------

def step_action(step: RemoteStep) -> tuple[Digest, dict[Digest, bytes]]:
    """The action that runs ``step`` on a worker and every blob it names but the layer blobs (which
    ``backend.farm.cas.ensure_in_cas`` put there): step.msgpack, the three Directories, the Command
    and the Action itself."""
    blobs: dict[Digest, bytes] = {}

    def put(msg) -> Digest:
        data, d = message_digest(msg)
        blobs[d] = data
        return d

    data = encode_step(step)
    blobs[step_digest := digest_of(data)] = data
    named = {x.blob: x.size for x in step.layers.values()}
    layers = pb.Directory(files=[pb.FileNode(name=blob.removeprefix("sha256:"), digest=to_proto((blob, size)))
                                 for blob, size in sorted(named.items())])
    mine = pb.Directory(files=[pb.FileNode(name="step.msgpack", digest=to_proto(step_digest))],
                        directories=[pb.DirectoryNode(name="layers", digest=to_proto(put(layers)))])
    root = pb.Directory(directories=[pb.DirectoryNode(name="irctl", digest=to_proto(put(mine)))])
    command = pb.Command(arguments=list(COMMAND), output_paths=[RESULT_PATH])
    action = pb.Action(command_digest=to_proto(put(command)), input_root_digest=to_proto(put(root)),
                       do_not_cache=False)
    return put(action), blobs
