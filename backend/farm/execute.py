"""Run one exec step on a build farm: its inputs put in the CAS, one REAPI ``Execute``, its result.

The client keeps everything but the process: it keys the step, looks it up in both caches, and only
then sends it here (``backend.solve.task``).  A step that must stay on this machine (``why_local``)
runs locally with one line saying why.  What a worker sends back is read as a cache's result is
(``backend.farm.results``): output layers are named, not downloaded, and fetched only when something
here reads them; so a build whose every exec runs remotely needs no runtime on the client, nor any
layer's files, until it exports.  A failure reads exactly as a local one (``backend.ops.exec``),
its output lines masked by the same redactor, and a success's result is filed under the step's
cache action as a step that ran here is (``backend.farm.cache``: ``ran``), so another machine keyed
the same way hits it.
"""

from __future__ import annotations

import time

from backend.errors import BackendError, BuildError, SolveError
from backend.farm.cas import ensure_in_cas
from backend.farm.results import ResultError, decode_result
from backend.farm.step import RemoteStep, step_action, why_local
from backend.ops.exec import process_failed
from backend.ops.handler import OpHandler
from backend.ops.workspace import Step, Workspace, layer_id_of, layers_identity
from backend.output import Lines
from backend.reapi.client import Remote, RemoteError
from backend.reapi.digests import from_proto
from backend.result import Snapshot
from backend.runtime.container import Cancelled

MAX_OUTPUT = 4 << 20  # bytes of a step's output read back (a worker sends the tail only)
QUEUE_SAID = 0.5  # seconds in the server's queue worth a line


class RemoteExecution:
    """The ``Execute`` service of ``--remote``: one per solve, shared by every exec step."""

    def __init__(self, remote: Remote, name: str, source_date_epoch: int | None = None) -> None:
        self.remote, self.name = remote, name  # name: the URL as the user wrote it, for messages
        self.source_date_epoch = source_date_epoch  # layers sent are written as the export writes them
        self._own = True  # False once the --remote-cache source's channel is used (it closes that)

    @classmethod
    def connect(cls, remote: Remote, name: str, source_date_epoch: int | None = None) -> RemoteExecution:
        """Check the server executes (one round trip, before anything runs); an unreachable server
        or one that does not execute is one line, and the build stops: ``--remote`` asked for it."""
        try:
            caps = remote.capabilities()
        except RemoteError as e:  # (Unreachable too: "REAPI server grpc://…: cannot reach it (…)")
            remote.close()
            raise SolveError(f"--remote: {e}") from None
        if not caps.exec_enabled:
            remote.close()
            raise SolveError(f"--remote {name}: the server does not execute actions (its capabilities say so); "
                             "use it as --remote-cache")
        return cls(remote, name, source_date_epoch)

    def why_local(self, handler: OpHandler, options) -> str | None:
        """Why ``handler``'s op runs on this machine; None: it goes to the farm (an exec op only)."""
        if handler.kind != "exec":
            return "not a process"
        if getattr(options, "debug_shell", None) is not None:
            return "--on-error=shell opens its shell here"
        return why_local(handler.op, handler.network(options))

    def run(self, ws: Workspace, step: Step, handler: OpHandler, inputs: list[Snapshot], key: str
            ) -> tuple[list[Snapshot], str]:
        """Run the step on a worker: its outputs (whose layers are the farm's, fetched when read)
        and the worker's name."""
        op = handler.op
        assert op.exec is not None
        step.event("started")  # (its inputs' upload is part of its time, as a local step's mounts are)
        step.started = time.monotonic()
        ids = tuple(tuple(_layer_ids(ws, s)) for s in inputs)
        try:
            layers = ensure_in_cas(ws, self.remote, list(dict.fromkeys(lid for i in ids for lid in i)),
                                   source_date_epoch=self.source_date_epoch)
            sent = RemoteStep(op, ids, {lid: layers[lid] for i in ids for lid in i}, handler.network(ws.options),
                              step.description, key)
            action, blobs = step_action(sent)
            self.remote.upload_blobs({d: blobs[d] for d in self.remote.find_missing(list(blobs))})
            # --no-cache: the server's own cache of this very action is skipped too, as the step's key was
            again = ws.options.no_cache or step.group in ws.options.no_cache_groups
            response = self.remote.execute(action, skip_cache_lookup=again, on_stage=self._stage(step),
                                           cancel=ws.cancel)
        except SolveError:
            raise  # (LayerUnavailable: the solver builds again without the cache that promised a layer)
        except BackendError as e:  # the server failed or refused; a layer that could not be sent
            if ws.cancel.is_set():  # a sibling failed: this one was only stopped
                raise Cancelled("build cancelled") from None
            raise BuildError(f"--remote: {e}") from None
        result = response.result
        worker = _printable(result.execution_metadata.worker) or "an unnamed worker"
        if response.cached_result:  # the server had run this very action before (for another client)
            worker += " (the farm's cache)"
        lines = Lines(step.log, ws.redactor)
        lines(self._output(result.stdout_raw, result.stdout_digest))
        lines.flush()
        if result.exit_code != 0:
            said = _last_line(ws.redactor.text(self._output(result.stderr_raw, result.stderr_digest).decode(
                "utf-8", "replace")))
            if said:  # the worker's words for it: the very message a local run of the step gives
                raise BuildError(said, output_tail=tuple(lines.tail), exit_code=result.exit_code)
            raise process_failed(op.exec.args, result.exit_code, tuple(lines.tail))
        try:
            outputs, found = decode_result(self.remote, result)
        except ResultError as e:
            raise BuildError(f"--remote: worker {worker}'s result is unusable: {e}") from None
        except RemoteError as e:
            raise BuildError(f"--remote: {e}") from None
        n = max((m.output for m in op.exec.mounts), default=-1) + 1
        if len(outputs) != n or any(o.identity != layers_identity(o.layers) for o in outputs):
            raise BuildError(f"--remote {self.name}: worker {worker} returned {len(outputs)} outputs that "
                             f"are not the {n} this step makes")  # (a hostile worker's, or another program's)
        ws.images.add_remote(found, {}, ("reapi", self.remote))
        for lid in {lid for o in outputs for lid in o.layers}:
            ws.images.set_owner(lid, (step.digest, step.description, step.group))
        return [ws.snapshot(list(o.layers)) for o in outputs], worker

    def share(self, shared) -> None:
        """Speak to the server through the ``--remote-cache`` source of the same server, if the
        solve has one (``shared``: ``backend.remotecache.sources.RemoteCache``): one channel, and
        one origin for the layers either names, so filing a remote step's result (the source's
        ``ran``) finds its layers already in the CAS instead of fetching them."""
        for source in getattr(shared, "live", ()):
            if getattr(source, "flag", "") == "--remote-cache" and source.name == self.name:
                self.remote.close()
                self.remote, self._own = source.remote, False
                return

    def close(self) -> None:
        if self._own:
            self.remote.close()

    def _stage(self, step: Step):
        """What the server says of the step as it moves (``--debug``), and a wait in its queue,
        said as a wait for a local job slot is."""
        queued: list[float] = []

        def said(stage: str) -> None:
            step.event("debug", f"{step.description or step.digest[:19]}: {stage.lower()} on {self.name}")
            if stage == "QUEUED":
                queued.append(time.monotonic())
            elif stage == "EXECUTING" and queued and time.monotonic() - queued[0] > QUEUE_SAID:
                step.info(f"waited {time.monotonic() - queued[0]:.1f}s in the build farm's queue")
        return said

    def _output(self, raw: bytes, digest) -> bytes:
        """A result's stdout or stderr: inline, or read (capped) from the CAS."""
        if raw or not digest.hash:
            return raw
        try:
            return self.remote.read_bytes(from_proto(digest), cap=MAX_OUTPUT)
        except BackendError as e:  # (RemoteError, or a digest no server should send)
            return f"[the step's output could not be read: {e}]\n".encode()


def _layer_ids(ws: Workspace, snap: Snapshot) -> list[str]:
    """The layers an input is made of: a local context is first made one."""
    if snap.host_dir is not None:
        return [ws.local_layer(snap)]
    return [layer_id_of(p) for p in snap.layers]


def _last_line(text: str) -> str:
    """The last non-empty line of ``text``, printable and cut: one line of an error report."""
    found = next((line for line in reversed(text.splitlines()) if line.strip()), "")
    return _printable(found, 500)


def _printable(name: str, most: int = 100) -> str:
    """``name`` as a server says it: one short line of printable text."""
    return "".join(c for c in name if c.isprintable())[:most]
