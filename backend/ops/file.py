"""File ops: mount the base's layers with a fresh upper, apply the actions on the merged root with
read-only views of the source snapshots, and commit the upper as the new layer.

The actions themselves (Docker's COPY semantics, chown by name, …) belong to ``backend.fileops.actions``;
local-context scanning (stat-cached, in ``contexts.db`` of the store) to ``backend.fileops.context``
(through ``Workspace.scan``).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ir import ops as irops

from backend.fs import safefs
from backend.fileops.context import selection_digest as tree_selection_digest
from backend.fileops.copy import SourceView
from backend.fileops.actions import apply_actions
from backend.ops.handler import OpHandler, Reads
from backend.ops.workspace import Step, Workspace
from backend.result import Snapshot


class FileHandler(OpHandler):
    kind = "file"
    cost = 2.0

    def reads(self, index: int) -> Reads:
        """One ``("copy", action)`` per copy from input ``index``; the base is read whole."""
        f = self.op.file
        assert f is not None
        if f.base == index:
            return None
        return [("copy", a.copy) for a in f.actions if a.copy is not None and a.copy.src == index] or None

    def run(self, ws: Workspace, step: Step, inputs: list[Snapshot]) -> list[Snapshot]:
        assert self.op.file is not None
        return [run_file(ws, step, self.op.file, inputs)]


# ----------------------------------------------------------------------------------------- selections


def selection_digest(ws: Workspace, snap: Snapshot, copy: irops.CopyAction, listing: list | None = None) -> str:
    """Checksum of exactly the files ``copy`` selects from the local context ``snap`` (``listing``:
    see ``backend.fileops.context.selection_digest``)."""
    return tree_selection_digest(ws.context_scan(snap), copy, listing)


def layered_selection_digest(ws: Workspace, snap: Snapshot, copy: irops.CopyAction, step: Step | None = None,
                             listing: list | None = None) -> str:
    """Checksum of what ``copy`` selects from a layered snapshot, read through a read-only view
    (``step``'s, which its copy then reads too)."""
    if step is not None:
        return tree_selection_digest(SourceView(readonly_view(ws, step, snap)), copy, listing)
    with contextlib.ExitStack() as stack:
        return tree_selection_digest(SourceView(_readonly_view(ws, stack, snap)), copy, listing)


# ----------------------------------------------------------------------------------------- run


def run_file(ws: Workspace, step: Step, op: irops.FileOp, inputs: list[Snapshot]) -> Snapshot:
    base = inputs[op.base] if op.base >= 0 else None
    lowers = ws.lowers(base) if base is not None else []
    base_ids = [f"sha256:{p.name}" for p in lowers]
    work = ws.temp_dir("file-")
    upper, wd = work / "upper", work / "work"
    upper.mkdir()
    written: dict = {}  # content digests noted by the copies, so the commit does not read them back
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(ws.snapshotter.mounted(lowers, upper, wd))
        sources: list[SourceView] = []
        for i, snap in enumerate(inputs):
            if not any(a.copy is not None and a.copy.src == i for a in op.actions):
                sources.append(SourceView(Path(os.devnull), label="unused input"))
            elif snap.host_dir is not None:
                sources.append(SourceView.context(Path(snap.host_dir), snap.include, snap.exclude))
            else:
                sources.append(SourceView(readonly_view(ws, step, snap)))
        apply_actions(root, op.actions, sources, written=written,
                      warn=lambda text: step.info(f"warning: {step.description or step.digest[:19]}: {text}"))
    lid = ws.commit(upper, written)
    safefs.rmtree(work, ignore_errors=True)
    return ws.snapshot(base_ids + ([lid] if lid else []))


def readonly_view(ws: Workspace, step: Step, snap: Snapshot) -> Path:
    """A read-only view of the layered snapshot ``snap``, mounted once per step: the cache key's
    selection digest and the copy itself read the same mount, unmounted when the step ends."""
    view = step.views.get(snap.identity)
    if view is None:
        view = step.views[snap.identity] = _readonly_view(ws, step.resources, snap)
    return view


def _readonly_view(ws: Workspace, stack: contextlib.ExitStack, snap: Snapshot) -> Path:
    lowers = ws.lowers(snap)
    work = ws.temp_dir("view-")
    stack.callback(safefs.rmtree, work, True)
    return stack.enter_context(ws.snapshotter.readonly(lowers, work / "work"))
