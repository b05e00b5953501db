"""Cache keys: the op as its handler shows it, plus the *identity* of each input's result.

An input contributes its content identity, never how it was made, so when an op re-runs but produces
the same files everything after it is a hit again (early cutoff).  An input the op reads only parts
of (``OpHandler.reads``: a COPY's sources, a bind mount of a sub-path) contributes the checksum of
exactly those parts, so editing an unrelated file re-runs nothing.  The bytes hashed here are the
ones every earlier irctl hashed (``tests/backend/test_cache_keys_pinned.py``): a store filled by an
older version still hits.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence

from ir import ops as irops
from ir.codec import canonical_bytes

from backend.fileops.copy import FileOpError
from backend.ops.file import layered_selection_digest, selection_digest
from backend.ops.handler import OpHandler
from backend.ops.workspace import Step, Workspace
from backend.result import Snapshot

KEY_PREFIX = b"irctl-cache-key-v1\0"
SELECTION_PREFIX = b"sel2\0"  # memos made before a selection counted xattrs and device numbers are not reused


def cache_key(body: irops.Op, parts: Sequence[str], extra: str) -> str:
    """The key of an op whose handler shows it as ``body``, with its inputs' ``parts`` (identities or
    selection checksums, in input order) and ``extra`` (``OpHandler.key_extra``)."""
    h = hashlib.sha256(KEY_PREFIX)
    h.update(canonical_bytes(body))
    for part in parts:
        h.update(b"\0input\0" + part.encode())
    h.update(b"\0extra\0" + extra.encode())
    return "sha256:" + h.hexdigest()


class InputIdentities:
    """What each input contributes to a key, with selection checksums remembered in the store per
    (identity, selection), so a cached rebuild mounts nothing.  ``options.record`` (the build record,
    if any) receives the file lists behind them, for ``--explain``."""

    def __init__(self, ws: Workspace, options) -> None:
        self.ws, self.options = ws, options
        self.ledger = getattr(options, "ledger", None)  # a shared cache carries the checksums too
        self.borrowed: set[str] = set()  # steps whose key rests on a shared cache's checksum (see of())

    def of(self, handler: OpHandler, index: int, snap: Snapshot, step: Step, *, own: bool = False) -> str:
        """The identity input ``index`` contributes.  So ``COPY --from=build /out/app`` and
        ``RUN --mount=type=bind,from=build,source=/out/app`` stay cached when the build stage re-ran
        but produced the same ``/out/app`` (early cutoff across stages)."""
        reads = handler.reads(index)
        if reads is None:
            if snap.host_dir is not None and self.options.record is not None:
                self._context_listing(snap)
            return snap.identity
        digests = []
        for kind, c in reads:  # a pure function of (identity, selection): remembered, as walking it is not free
            tag = SELECTION_PREFIX + (b"mount\0" if kind == "mount" else b"")
            action = hashlib.sha256(tag + canonical_bytes(c)).hexdigest()
            found = self.ws.store.selection(snap.identity, action)
            # a shared cache's checksum needs no files; never for a local context (its scan gives it cheaply)
            if found is None and self.ws.remote and not own and snap.host_dir is None:
                found = self.ws.remote.selection(snap.identity, action)  # type: ignore[attr-defined]
                if found is not None:  # the key is the cache's word: a result under it is not kept locally,
                    self.borrowed.add(step.digest)  # and a step that runs is filed under its own (own=True)
            if found is None:  # (a shared cache's answer is not kept: it is trusted for this build only)
                found = self._selection_digest(snap, c, step, missing_ok=kind == "mount")
                self.ws.store.record_selection(snap.identity, action, found)
            if self.ledger is not None:
                self.ledger.selection(snap.identity, action, found)
            digests.append(found)
        return "selection:" + ",".join(digests)

    def _selection_digest(self, snap: Snapshot, c: irops.CopyAction, step: Step, missing_ok: bool) -> str:
        record = self.options.record
        listing = record.new_listing() if record is not None else None
        try:
            if snap.host_dir is not None:  # from the context's scan: no I/O, but 20,000 files take 0.3 s
                found = selection_digest(self.ws, snap, c, listing)
            else:
                found = layered_selection_digest(self.ws, snap, c, step, listing)  # a copy reuses step's view
            if record is not None:
                with contextlib.suppress(OSError):
                    record.save_listing(found, listing)
            return found
        except FileOpError as e:
            if not missing_ok:
                raise
            # a mount of a path that is not there: the mount itself reports it when the step runs
            return "missing:" + hashlib.sha256(str(e).encode("utf-8", "surrogateescape")).hexdigest()

    def _context_listing(self, snap: Snapshot) -> None:
        """Keep the file list of a local context a step reads whole, for ``--explain``."""
        record = self.options.record
        if record.has_listing(snap.identity):
            return
        found = self.ws.scans.get(snap.identity)
        if found is None or len(found.entries) > record.MAX_LISTING:
            return
        entries = record.new_listing()
        for rel, e in found.entries.items():
            line = f"{e.type}\0{e.mode:o}\0{e.target}\0{e.digest}".encode("utf-8", "surrogateescape")
            entries.append((rel, hashlib.sha256(line).hexdigest()[:16]))
        with contextlib.suppress(OSError):
            record.save_listing(snap.identity, entries)
