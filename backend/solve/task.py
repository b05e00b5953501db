"""One op of a solve, as the scheduler runs it: key, lookup, and only on a miss the handler's run.

The key is the handler's view of the op plus its inputs' identities (``backend.solve.keys``); a hit
returns the stored results without mounting or executing anything; a miss runs the handler, stamps
and records its outputs.  Every failure leaves here as one ``BuildError`` that names the step and
its source lines, with every secret value of the build masked.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from ir import ops as irops

from backend.errors import BuildError, GrantError, SolveError
from backend.fs import safefs
from backend.oci.precompress import Precompressor
from backend.oci.pull import LayerUnavailable
from backend.ops.handler import OpHandler
from backend.ops.image import run_image
from backend.ops.merge import merge_identity
from backend.ops.workspace import Step, Workspace, layer_id_of, layers_identity
from backend.output import Redactor
from backend.result import Snapshot
from backend.runtime.container import Cancelled
from backend.solve.keys import InputIdentities, cache_key
from backend.solve.locations import describe, source_location
from backend.solve.results import from_output, stamp, to_output
from backend.store.records import Output

if TYPE_CHECKING:  # (grpc is imported only by a build that uses a farm)
    from backend.farm.execute import RemoteExecution


class OpTask:
    """Solves ops of ``doc`` one call at a time (``__call__(digest)``, once its inputs are solved);
    ``results`` maps each solved op to its outputs' snapshots.

    With shared caches (``ws.remote``: ``backend.remotecache.sources.RemoteCache``) a key the local
    store lacks is looked up there.  A result whose layers can all be had (from the store, a base
    image or the cache) is a hit like a local one, its layers fetched only when something reads
    them.  One whose layers the cache does not hold (``mode=min`` keeps only the image's) is a hit
    *by key* (``key_only``, not for ``targets``): its identity keys what follows it, so a step
    downstream can hit too; should anything need its files after all, ``LayerUnavailable`` leaves
    here and the solver builds again without such hits."""

    def __init__(self, doc: irops.Document, handlers: dict[str, OpHandler], options, ws: Workspace,
                 redactor: Redactor, precompressor: Precompressor | None = None,
                 image_chain: Collection[tuple[str, int]] = (), *, key_only: bool = False,
                 targets: Collection[str] = (), before_run: Callable[[], None] | None = None,
                 farm: RemoteExecution | None = None) -> None:
        self.doc, self.handlers, self.options, self.ws, self.redactor = doc, handlers, options, ws, redactor
        self.precompressor, self.image_chain = precompressor, image_chain
        self.key_only, self.targets = key_only, set(targets)
        self.before_run = before_run  # called before any handler runs (the solver's runtime warm-up)
        self.farm = farm  # --remote: where exec steps that may leave this machine run
        self.ledger = getattr(options, "ledger", None)
        self.identities = InputIdentities(ws, options)
        self.results: dict[str, list[Snapshot]] = {}
        self.imported: dict[str, int] = {}  # shared cache name -> results taken from it
        self._lock = threading.Lock()
        self._used: dict[str, int] = {}  # op -> how many of its outputs the graph uses (a remote hit has them)
        for ref in [*(r for o in doc.ops.values() for r in o.inputs), *doc.roots.values()]:
            self._used[ref.op] = max(self._used.get(ref.op, 1), ref.output + 1)

    def __call__(self, digest: str) -> None:
        op = self.doc.ops[digest]
        inputs = [self.results[r.op][r.output] for r in op.inputs]
        desc, group = describe(self.doc, digest)
        step = Step(self.ws, digest, desc, group)
        try:
            with step.resources:
                self.results[digest] = self._solve(step, self.handlers[digest], inputs)
        except BuildError as e:
            if self.ws.cancel.is_set() and e.exit_code is not None and e.exit_code >= 128:
                raise  # killed because a sibling failed
            message = self.redactor.text(e.message)
            step.event("failed", message, time.monotonic() - step.started)
            raise BuildError(message, op=digest, description=desc, location=source_location(self.doc, digest),
                             output_tail=e.output_tail, exit_code=e.exit_code) from None
        except (GrantError, Cancelled):
            raise
        except Exception as e:
            if isinstance(e, LayerUnavailable) and self.ws.remote is not None:
                raise  # the solver builds again without what the shared cache promised
            msg = self.redactor.text(
                str(e) if isinstance(e, (SolveError, safefs.TreeError)) else
                f"{type(e).__name__}: {safefs.os_error_text(e)}" if isinstance(e, OSError) else
                f"{type(e).__name__}: {e}")
            step.event("failed", msg, time.monotonic() - step.started)
            raise BuildError(msg, op=digest, description=desc,
                             location=source_location(self.doc, digest)) from (None if isinstance(e, SolveError) else e)

    def _solve(self, step: Step, handler: OpHandler, inputs: list[Snapshot]) -> list[Snapshot]:
        ws = self.ws
        snap = handler.resolve(ws, step)
        if snap is not None:
            if all(p.is_dir() for p in snap.layers):
                step.event("cached", "resolved")
            else:  # layers still to pull: their progress comes under this op when a step needs them
                step.event("finished", "resolved", time.monotonic() - step.started)
            self._note(step, handler, "resolved", identities=[snap.identity])
            if self.ledger is not None and snap.host_dir is None:
                self.ledger.resolved([layer_id_of(p) for p in snap.layers])
            return [snap]
        extra = handler.key_extra(self.options)
        parts: list[str] = []
        key = None
        if extra is not None:
            parts = [self.identities.of(handler, i, s, step) for i, s in enumerate(inputs)]
            key = cache_key(handler.key_body(), parts, extra)
        if key is not None and not self.options.no_cache and step.group not in self.options.no_cache_groups:
            hit = ws.store.lookup(key)
            if hit is not None:
                step.event("cached")
                self._note(step, handler, "cached", key, parts, extra, [o.identity for o in hit])
                if self.ledger is not None:
                    self.ledger.keyed(key, hit)
                return [from_output(ws, o) for o in hit]
            if ws.remote:
                found = self._remote_hit(step, key, handler, inputs)
                if found is not None:
                    self._note(step, handler, "cached", key, parts, extra, [o.identity for o in found])
                    return [from_output(ws, o) for o in found]
        # (noted before it runs: a failed step is explained too)
        self._note(step, handler, "ran", key or "", parts, extra or "")
        farm = self._farm_for(step, handler) if key is not None else None
        if not handler.announces_start:
            step.event("started")
        step.started = time.monotonic()
        worker = ""
        if farm is not None:  # (no local job slot, no runtime)
            made, worker = farm.run(ws, step, handler, inputs, key)  # type: ignore[arg-type]
        else:
            if self.before_run is not None:
                self.before_run()
            made = handler.run(ws, step, inputs)
        outs = stamp(made, inputs, time.time_ns())
        if key is not None and step.digest in self.identities.borrowed:  # filed under the key its own
            parts = [self.identities.of(handler, i, s, step, own=True) for i, s in enumerate(inputs)]  # files
            key = cache_key(handler.key_body(), parts, extra or "")  # give, never one a cache's checksum made
        if key is not None:
            rows = [to_output(ws, s) for s in outs]
            if farm is None:  # (a remote step's layers are not here: the server keeps its result)
                ws.store.record(key, rows)
            if self.ledger is not None:
                self.ledger.keyed(key, rows)
                for lid in (lid for r in rows for lid in r.layers) if farm is not None else ():
                    if (x := ws.images.remote_layer(lid)) is not None:  # (a --cache-to names the farm's blob)
                        self.ledger.remote_layer(lid, x)
            if ws.remote:  # a live shared cache keeps it (--remote-cache: uploaded in the background; a
                ws.remote.ran(key, rows)  # remote step's layers are in its CAS already: its result only)
        if self.precompressor is not None and farm is None:  # (a cache hit's layers, or a farm's, are left
            self._precompress(step.digest, inputs, outs)  # to the export: a cheap lookup there, most often stored)
        self._note(step, handler, "ran", key or "", parts, extra or "", [s.identity for s in outs])
        step.event("finished", f"on {worker}" if worker else "", time.monotonic() - step.started)
        return outs

    def _farm_for(self, step: Step, handler: OpHandler) -> RemoteExecution | None:
        """The build farm when this step runs there; an exec step that may not says why, once."""
        if self.farm is None or handler.kind != "exec":
            return None
        why = self.farm.why_local(handler, self.options)
        if why is not None:
            step.info(f"{step.description or step.digest[:19]}: runs on this machine, not the build farm: {why}")
            return None
        return self.farm

    def _remote_hit(self, step: Step, key: str, handler: OpHandler, inputs: list[Snapshot]) -> tuple | None:
        """The outputs a shared cache holds for ``key``, if this solve may use them (see the class)."""
        ws = self.ws
        found = ws.remote.lookup(key)
        if found is None:
            return None
        theirs, cache = found
        if len(theirs) < self._used.get(step.digest, 1):  # not what this op makes: a damaged cache
            return None
        outputs = tuple(_as_made_here(handler, inputs, o) for o in theirs)
        if None in outputs:
            return None  # another irctl's, or a lie that would key what follows as other contents
        layers = {lid for o in outputs for lid in o.layers}
        whole = all(ws.images.can_supply(lid) for lid in layers)
        if not whole and (not self.key_only or step.digest in self.targets):
            return None
        if whole:
            if step.digest not in self.identities.borrowed:  # (a key made of a cache's checksums is its
                ws.store.record(key, list(outputs))  # word, not this machine's) the next build finds it here
            for lid in layers:
                ws.images.set_owner(lid, (step.digest, step.description, step.group))
        if self.ledger is not None:
            self.ledger.keyed(key, outputs, imported=True)
            for lid in layers:
                if (x := ws.images.remote_layer(lid)) is not None:
                    self.ledger.remote_layer(lid, x)
        with self._lock:
            self.imported[cache.name] = self.imported.get(cache.name, 0) + 1
        step.event("cached", f"from {cache.name}" if whole else f"from {cache.name} (by key)")
        return outputs

    def _note(self, step: Step, handler: OpHandler, status: str, key: str = "", parts: list[str] | None = None,
              extra: str = "", identities: list[str] | None = None) -> None:
        """Tell the build record (if any) what this step's key was made of."""
        record = self.options.record
        if record is None:
            return
        op = handler.op
        inputs = [(ref.op, ref.output, part) for ref, part in zip(op.inputs, parts or ())]
        record.note(step.digest, op, handler.key_body(), self.redactor.text(step.description), step.group, status,
                    key, inputs, extra, identities)

    def _precompress(self, digest: str, inputs: list[Snapshot], outs: list[Snapshot]) -> None:
        """Hand the layers this op just made, on an output the target's image is made of, to the
        background compressor (``backend.oci.precompress``)."""
        assert self.precompressor is not None
        had = {p for s in inputs for p in s.layers}
        for i, snap in enumerate(outs):
            if (digest, i) in self.image_chain and snap.host_dir is None:
                self.precompressor.submit(p for p in snap.layers if p not in had)


def _as_made_here(handler: OpHandler, inputs: list[Snapshot], o: Output) -> Output | None:
    """A shared cache's output as this machine makes it, or None when it is not named so: by its
    layers' identity (what exec, file and most merge steps make), or, for an image or a merge step,
    whose identity is made of its inputs', with exactly its inputs' layers.  An image step's config is
    the op's own (a cache carries none).  Steps on top are keyed by the identity, and kept locally:
    one the cache picked could file them under another content's key, for later builds to take."""
    stacked = [layer_id_of(p) for s in inputs for p in s.layers] if all(s.host_dir is None for s in inputs) else None
    if handler.kind == "image" and handler.op.image is not None and len(inputs) == 1:
        mine = run_image(handler.op.image, inputs[0])
        if o.identity != mine.identity or list(o.layers) != stacked:
            return None
        return Output(o.identity, o.layers, {**dataclasses.asdict(mine.image), "history": list(mine.image.history)},
                      o.created)
    if o.identity == layers_identity(o.layers) or (
            handler.kind == "merge" and o.identity == merge_identity(inputs) and list(o.layers) == stacked):
        return Output(o.identity, o.layers, None, o.created)
    return None
