"""The remote exec envelope (``backend.farm.step``): what a client sends is what a worker reads, byte
for byte the same for the same step, and a worker refuses (one escaped line, never a traceback) what
a client never sends: secrets, ssh agents, the host's network, insecure steps, anything malformed."""

from __future__ import annotations

import msgspec
import pytest

from ir import ops
from ir.codec import canonical_bytes

from backend.farm.step import (COMMAND, MAX_STEP_BYTES, RESULT_PATH, RemoteStep, StepError, decode_step, encode_step,
                               step_action, why_local)
from backend.oci.pull import RemoteLayer
from backend.reapi.digests import digest_of, from_proto
from backend.reapi.protos import remote_execution_pb2 as pb

GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
BASE = "sha256:" + "a" * 64
L1, L2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
ROOT = ops.Mount(target="/", input=0, output=0)


def layer(n: str) -> RemoteLayer:
    return RemoteLayer("sha256:" + n * 64, GZ, 101, "sha256:" + n * 63 + "f", "sde=None")


def exec_op(*mounts: ops.Mount, network: str = "default", security: str = "sandbox") -> ops.Op:
    return ops.Op(inputs=(ops.Ref(BASE),), exec=ops.ExecOp(args=("sh", "-c", "echo hi > /x"), mounts=(ROOT, *mounts),
                                                          network=network, security=security))


def a_step(op: ops.Op | None = None, **kw) -> RemoteStep:
    fields = dict(op=op or exec_op(), inputs=((L1, L2),), layers={L1: layer("b"), L2: layer("c")},
                  network="default", description="[2/3] RUN echo hi > /x", key="sha256:" + "e" * 64)
    fields.update(kw)
    return RemoteStep(**fields)


def wire(step: RemoteStep, **changes) -> bytes:
    """``step``'s step.msgpack with some keys changed (or, given None, removed)."""
    raw = msgspec.msgpack.decode(encode_step(step))
    for k, v in changes.items():
        if v is None:
            raw.pop(k)
        else:
            raw[k] = v
    return msgspec.msgpack.encode(raw)


def test_a_worker_reads_exactly_the_step_a_client_sent():
    step = a_step()
    data = encode_step(step)
    assert decode_step(data) == step
    assert encode_step(decode_step(data)) == data
    assert list(msgspec.msgpack.decode(data)) == sorted(msgspec.msgpack.decode(data))  # keys sorted


def test_the_same_step_is_the_same_action_and_its_input_root_is_the_spec_s():
    action, blobs = step_action(a_step())
    again, _ = step_action(a_step(layers={L2: layer("c"), L1: layer("b")}))  # (dict order is not the step's)
    assert again == action
    assert all(digest_of(data) == d for d, data in blobs.items())
    act = pb.Action.FromString(blobs[action])
    command = pb.Command.FromString(blobs[from_proto(act.command_digest)])
    assert list(command.arguments) == list(COMMAND) and list(command.output_paths) == [RESULT_PATH]
    root = pb.Directory.FromString(blobs[from_proto(act.input_root_digest)])
    assert [d.name for d in root.directories] == ["irctl"] and not root.files
    mine = pb.Directory.FromString(blobs[from_proto(root.directories[0].digest)])
    assert [f.name for f in mine.files] == ["step.msgpack"] and [d.name for d in mine.directories] == ["layers"]
    assert blobs[from_proto(mine.files[0].digest)] == encode_step(a_step())
    named = pb.Directory.FromString(blobs[from_proto(mine.directories[0].digest)])
    assert [(f.name, from_proto(f.digest)) for f in named.files] == [
        ("b" * 64, ("sha256:" + "b" * 64, 101)), ("c" * 64, ("sha256:" + "c" * 64, 101))]
    assert ("sha256:" + "b" * 64, 101) not in blobs  # layer blobs are ensure_in_cas's, never re-sent here


@pytest.mark.parametrize("op, network, why", [
    (exec_op(ops.Mount(target="/run/secrets/tok", type="secret", secret=ops.SecretOptions(id="tok"))), "default",
     "it mounts a secret at /run/secrets/tok"),
    (exec_op(ops.Mount(target="/ssh", type="ssh", ssh=ops.SSHOptions())), "default", "it mounts an ssh agent at /ssh"),
    (exec_op(network="host"), "host", "it uses the host's network"),
    (exec_op(), "host", "it uses the host's network"),  # --network host given to a `default` step
    (exec_op(security="insecure"), "default", "it asks for security=insecure"),
    (ops.Op(inputs=(ops.Ref(BASE),), file=ops.FileOp(actions=(ops.FileAction(mkdir=ops.MkdirAction(path="/d")),))),
     "default", "a file op is not a process"),
])
def test_what_stays_on_the_client_a_worker_refuses(op, network, why):
    assert why_local(op, network) == why
    with pytest.raises(StepError) as e:
        decode_step(encode_step(a_step(op=op, network=network)))
    assert str(e.value) == f"step.msgpack: refused: {why}"


def test_an_eligible_step_may_go():
    assert why_local(exec_op(ops.Mount(target="/cache", type="cache", cache=ops.CacheOptions(id="c"))), "none") is None


@pytest.mark.parametrize("mutate, said", [
    (lambda s: wire(s, format="irctl.step.v2"), "format 'irctl.step.v2' is not 'irctl.step.v1'"),
    (lambda s: wire(s, extra=1), "is not an irctl step: Object contains unknown field `extra`"),
    (lambda s: wire(s, key=None), "is not an irctl step: Object missing required field `key`"),
    (lambda s: wire(s, inputs="x"), "is not an irctl step: Expected `array`, got `str`"),
    (lambda s: encode_step(s)[:-5], "is not an irctl step: Input data was truncated"),
    (lambda s: encode_step(s) + b"\xc0", "is not an irctl step: MessagePack data is malformed: trailing"),
    (lambda s: wire(s, op=b"\x81\xa4exec\xc0"), "op is not"),
    (lambda s: wire(s, op=canonical_bytes(s.op) + b"\xc0"), "op is not an IR op"),
    (lambda s: wire(s, inputs=[]), "0 inputs for an op that has 1"),
    (lambda s: wire(s, key="sha256:" + "E" * 64), "key is not a sha256 digest"),
    (lambda s: wire(s, inputs=[[L1, "sha256:" + "9" * 64]]), "has no descriptor"),
    (lambda s: wire(s, layers={L1: {**msgspec.to_builtins(layer("b")), "blob": "md5:x"}}), "not a sha256 digest"),
    (lambda s: wire(s, layers={L1: {**msgspec.to_builtins(layer("b")), "size": -1}}), "bad media type, size"),
    (lambda s: wire(s, layers={L1: {**msgspec.to_builtins(layer("b")), "media_type": "text/html"}}),
     "bad media type, size"),
    (lambda s: wire(s, description="x" * 5000), "description longer than 4096"),
    (lambda s: b"\x00" * (MAX_STEP_BYTES + 1), f"more than {MAX_STEP_BYTES}"),
])
def test_a_malformed_step_is_one_line(mutate, said):
    with pytest.raises(StepError) as e:
        decode_step(mutate(a_step()))
    assert said in str(e.value)
    assert "\n" not in str(e.value)


def test_a_hostile_key_never_reaches_the_terminal_raw():
    data = wire(a_step(), **{"\x1b[2J\x1b]0;pwned\x07": 1})
    with pytest.raises(StepError) as e:
        decode_step(data)
    assert "\x1b" not in str(e.value) and "\\x1b" in str(e.value)


def test_a_non_canonical_op_is_refused():
    """The op's bytes are its digest's: a reencoding (a default written out) would be another op."""
    step = a_step()
    raw = msgspec.msgpack.decode(canonical_bytes(step.op))
    raw["exec"]["cwd"] = "/"  # the default, spelled out
    with pytest.raises(StepError, match="not in canonical form"):
        decode_step(wire(step, op=msgspec.msgpack.encode(raw)))
