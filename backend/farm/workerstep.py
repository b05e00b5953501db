"""One leased action on a worker: its step from the CAS, run as a local build runs it, its result
back into the CAS.

The action comes from whoever can call Execute on the server, so everything in it is hostile until
checked: every blob is read with a size cap and its digest verified (``Remote.read_bytes``), the
step is decoded strictly (``farm.step.decode_step``) and validated as a graph reader validates an
op (``ir.validate.check_op``), and what a worker never gives a step is refused before anything is
fetched: a step that is not an exec, the host's network, ``security=insecure``, secret and ssh mounts
(the client keeps those steps local; only a hostile client sends one).  Input layers come from the
CAS into the worker's own store, each verified as any shared cache's layer is (``ImageResolver``), so
the store doubles as the worker's layer cache.  The step then runs through the same handler a local
build uses (``backend.ops.exec``), with the worker's own cache mounts.

The outcome is ``(Status, ActionResult)`` for the lease: a process that exits non-zero is an OK
status with its exit code and output tail (the action ran; REAPI's convention); a refused or broken
action is a non-OK status with one line saying why; only a worker going away or a server that
failed mid-upload is ``UNAVAILABLE``, which BuildGrid retries on another worker.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from google.rpc import code_pb2, status_pb2

from ir.validate import check_op

from backend.entitlements import Entitlements
from backend.errors import BackendError, BuildError
from backend.events import Event
from backend.farm.cas import ensure_in_cas
from backend.farm.results import encode_result
from backend.farm.step import COMMAND, MAX_STEP_BYTES, STEP_PATH, StepError, decode_step
from backend.oci.pull import ImageResolver
from backend.ops.registry import handler_for
from backend.ops.workspace import Step, Workspace, layer_id_of
from backend.output import Redactor
from backend.reapi import digests
from backend.reapi.errors import BlobMismatch, BlobNotFound, RemoteError
from backend.reapi.protos import remote_execution_pb2 as re_pb2
from backend.runtime.container import Cancelled
from backend.store.records import Output

MAX_MESSAGE = 4 << 20  # an Action, Command or Directory: a few hundred bytes, a few KiB for many layers
TAIL_LINES = 50  # output lines sent back with the result
TAIL_BYTES = 64 << 10  # REAPI inlines stdout up to this; the client shows the last lines only


class Refused(BackendError):
    """An action this worker will not run; ``str()`` says why in one line, ``code`` is its gRPC code."""

    def __init__(self, message: str, code: int = code_pb2.INVALID_ARGUMENT) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class StepOptions:
    """What ``backend.ops`` reads from a build's ``SolveOptions``, as a worker grants it: no secret,
    no ssh agent, no entitlement; ``network`` is the step's own (the client resolved ``--network``)."""

    network: str = "default"
    secrets: dict = field(default_factory=dict)
    ssh: dict = field(default_factory=dict)
    entitlements: Entitlements = field(default_factory=Entitlements)
    debug_shell: object = None


@dataclass
class Outcome:
    status: status_pb2.Status
    result: re_pb2.ActionResult | None
    description: str = ""
    fetched: int = 0  # bytes of layers this action downloaded from the CAS


class OutputTail:
    """The step's last output lines, bounded in lines and bytes (a step may print gigabytes)."""

    def __init__(self) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

    def add(self, line: str) -> None:
        self._lines.append(line[:TAIL_BYTES // TAIL_LINES * 4])

    def text(self) -> bytes:
        data = "".join(line + "\n" for line in self._lines).encode("utf-8", "surrogateescape")
        return data[-TAIL_BYTES:]


def run_leased(host, remote, worker: str, payload, cancel: threading.Event,
               accepted: Callable[[str], None] = lambda description: None) -> Outcome:
    """Run the action a lease carries (``payload``: an ``Action`` or its ``Digest``, packed in Any)
    in ``host`` (``backend.farm.worker.WorkerHost``); ``accepted(description)`` once the step passed
    every check.  Raises only on a bug of ours."""
    tail = OutputTail()
    description = ""
    try:
        action = _action(remote, payload)
        step = _step(remote, action)
        description = step.description
        accepted(description)
        return _run(host, remote, worker, step, tail, cancel)
    except Refused as e:
        return _failed(e.code, f"irctl worker {worker}: {e}", description)
    except Cancelled:
        return _failed(code_pb2.UNAVAILABLE, f"irctl worker {worker} stopped before the step ended", description)
    except (BlobMismatch, BlobNotFound) as e:  # asking again would fail again: not worth a retry
        return _failed(code_pb2.FAILED_PRECONDITION, f"irctl worker {worker}: {e}", description)
    except RemoteError as e:
        return _failed(code_pb2.UNAVAILABLE, f"irctl worker {worker}: {e}", description)
    except BackendError as e:  # the step could not be set up here (a layer refused, a mount selector missing…)
        return _failed(code_pb2.FAILED_PRECONDITION, f"irctl worker {worker}: {_one_line(str(e))}", description)


def _failed(code: int, message: str, description: str) -> Outcome:
    return Outcome(status_pb2.Status(code=code, message=message), None, description)


def _one_line(text: str) -> str:
    return text.splitlines()[0] if text else text


def _action(remote, payload) -> re_pb2.Action:
    """The Action a lease names: BuildGrid packs the Action itself, or its digest when it has none."""
    action = re_pb2.Action()
    if payload.Is(re_pb2.Action.DESCRIPTOR):
        payload.Unpack(action)
        return action
    if payload.Is(re_pb2.Digest.DESCRIPTOR):
        digest = re_pb2.Digest()
        payload.Unpack(digest)
        return _message(remote, action, digest, "the action")
    raise Refused(f"the lease carries a {payload.type_url.rsplit('/', 1)[-1] or 'nothing'}, not an Action")


def _digest(digest, what: str):
    try:
        return digests.from_proto(digest)
    except ValueError as e:
        raise Refused(f"{what}: {e}") from None


def _message(remote, msg, digest, what: str):
    d = _digest(digest, what)
    if d[1] > MAX_MESSAGE:
        raise Refused(f"{what} is {d[1]} bytes (at most {MAX_MESSAGE})")
    try:
        msg.ParseFromString(remote.read_bytes(d, cap=MAX_MESSAGE))
    except RemoteError:
        raise
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError: a blob that is not this message
        raise Refused(f"{what} {d[0][:19]}… is not a valid {type(msg).__name__} ({e})") from None
    return msg


def _step(remote, action: re_pb2.Action):
    """The step an irctl action carries: its Command is exactly ours, ``irctl/step.msgpack`` in its
    input root; the envelope decoded and refused unless a worker may run it."""
    command = _message(remote, re_pb2.Command(), action.command_digest, "the command")
    if list(command.arguments) != list(COMMAND):
        raise Refused(f"not an irctl worker step (command {_quote(command.arguments)})")
    node = _file_node(remote, action.input_root_digest, STEP_PATH)
    size = node.digest.size_bytes
    if size > MAX_STEP_BYTES:
        raise Refused(f"{STEP_PATH} is {size} bytes (at most {MAX_STEP_BYTES})")
    data = remote.read_bytes(_digest(node.digest, STEP_PATH), cap=MAX_STEP_BYTES)
    try:
        step = decode_step(data)  # refuses what a worker never runs (``farm.step.why_local``)
    except StepError as e:
        raise Refused(str(e)) from None
    errors = check_op(step.op)  # the op's own rules, as every IR reader checks them
    if errors:
        raise Refused(f"invalid op: {errors[0]}" + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))
    own = step.op.exec.network
    if own != "default" and own != step.network:  # the op's own mode wins over the envelope's (ExecHandler)
        raise Refused(f"the op asks for network {own}, the step for {step.network}")
    return step


def _quote(args) -> str:
    text = " ".join(args)
    return repr(text if len(text) <= 80 else text[:80] + "…")


def _file_node(remote, root_digest, path: str):
    """The FileNode at ``path`` (``dir/…/name``) under the input root, each Directory read capped."""
    *dirs, name = path.split("/")
    digest, where = root_digest, "the input root"
    for part in dirs:
        directory = _message(remote, re_pb2.Directory(), digest, where)
        found = next((d for d in directory.directories if d.name == part), None)
        if found is None:
            raise Refused(f"{where} has no directory {part!r}")
        digest, where = found.digest, f"{where}/{part}"
    directory = _message(remote, re_pb2.Directory(), digest, where)
    found = next((f for f in directory.files if f.name == name), None)
    if found is None:
        raise Refused(f"the input root has no {path}")
    return found


def _run(host, remote, worker: str, step, tail: OutputTail, cancel: threading.Event) -> Outcome:
    images = ImageResolver(host.store)  # one per action: a descriptor one client sent never serves another's
    try:
        images.add_remote(step.layers, {}, ("reapi", remote))
        ws = Workspace(store=host.store, work=host.work, state_dir=host.state_dir, snapshotter=host.snapshotter,
                       options=StepOptions(network=step.network), images=images, emit=_collect(tail), cancel=cancel,
                       redactor=Redactor(), executor=host.executor, exec_slots=host.exec_slots)
        inputs = [ws.snapshot(list(lids)) for lids in step.inputs]
        started = time.time_ns()
        images.ensure_layers([lid for lids in step.inputs for lid in lids])
        handler = handler_for(step.op)
        try:
            outputs = handler.run(ws, Step(ws, step.key, step.description, ""), inputs)
        except BuildError as e:
            if cancel.is_set():
                raise Cancelled("stopped") from None
            result = re_pb2.ActionResult(exit_code=e.exit_code if e.exit_code else 1)
            result.stdout_raw = tail.text() or "".join(f"{line}\n" for line in e.output_tail).encode()
            result.stderr_raw = (e.message + "\n").encode()[-TAIL_BYTES:]
            result.execution_metadata.worker = worker
            return Outcome(status_pb2.Status(code=code_pb2.OK), result, step.description, images.remote_bytes)
        given = {lid for lids in step.inputs for lid in lids}
        made = [_output(snap, given, started) for snap in outputs]
        layers = ensure_in_cas(ws, remote, sorted({lid for o in made for lid in o.layers}))
        result, blobs = encode_result(made, layers)
        _upload(remote, blobs)
        result.stdout_raw = tail.text()
        result.execution_metadata.worker = worker
        return Outcome(status_pb2.Status(code=code_pb2.OK), result, step.description, images.remote_bytes)
    finally:
        images.close()


def _output(snap, given: set[str], started: int) -> Output:
    """An output as a result names it: a layer it was given keeps no time of its own here (the
    client knows it), a layer this step made was made now."""
    lids = tuple(layer_id_of(p) for p in snap.layers)
    return Output(snap.identity, lids, None, tuple(None if lid in given else started for lid in lids))


def _upload(remote, blobs: dict) -> None:
    missing = remote.find_missing(list(blobs))
    for digest in blobs:
        if digest in missing:
            remote.upload_bytes(blobs[digest])


def _collect(tail: OutputTail):
    def emit(event: Event) -> None:
        if event.kind == "log":
            tail.add(event.text)
    return emit
