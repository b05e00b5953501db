"""File ops: mount the base's layers with a fresh upper, apply the actions on the merged root with
read-only views of the source snapshots, and commit the upper as the new layer.

The actions themselves (Docker's COPY semantics, chown by name, …) belong to ``backend.fs.fileops``;
local-context scanning (stat-cached, in ``contexts.db`` of the store) to ``backend.fs.context``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from ir import ops as irops

from backend.ops import Step, Workspace
from backend.result import Snapshot
from backend.fs import safefs

# ----------------------------------------------------------------------------------------- contexts


def scan(ws: Workspace, root: Path, include: tuple[str, ...], exclude: tuple[str, ...]):
    """Scan a local context (stat cache in the store: unchanged files are not re-read)."""
    from backend.fs.context import StatCache, scan_context

    with StatCache(ws.store.root / "contexts.db") as cache:
        result = scan_context(root, include, exclude, stat_cache=cache)
    ws.scans[result.identity] = result
    return result


def selection_digest(ws: Workspace, snap: Snapshot, copy: irops.CopyAction, listing: list | None = None) -> str:
    """Checksum of exactly the files ``copy`` selects from the local context ``snap`` (``listing``:
    see ``backend.fs.context.selection_digest``)."""
    from backend.fs.context import selection_digest as digest

    found = ws.scans.get(snap.identity)
    if found is None:
        found = scan(ws, Path(snap.host_dir), snap.include, snap.exclude)  # type: ignore[arg-type]
    return digest(found, copy, listing)


def layered_selection_digest(ws: Workspace, snap: Snapshot, copy: irops.CopyAction, step: Step | None = None,
                             listing: list | None = None) -> str:
    """Checksum of what ``copy`` selects from a layered snapshot, read through a read-only view
    (``step``'s, which its copy then reads too)."""
    from backend.fs.context import selection_digest as digest
    from backend.fs.copy import SourceView

    if step is not None:
        return digest(SourceView(readonly_view(ws, step, snap)), copy, listing)
    with contextlib.ExitStack() as stack:
        return digest(SourceView(_readonly_view(ws, stack, snap)), copy, listing)


def copy_context(ws: Workspace, snap: Snapshot, dest: Path) -> None:
    """Copy a local context, as its filters show it and owned by 0:0, into the plain dir ``dest``."""
    found = ws.scans.get(snap.identity) or scan(ws, Path(snap.host_dir), snap.include, snap.exclude)  # type: ignore[arg-type]
    root = Path(found.root)
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, found.root_mode)
    for rel in sorted(found.entries, key=os.fsencode):
        e = found.entries[rel]
        src, dst = root / rel, dest / rel
        if e.type == "dir":
            dst.mkdir(exist_ok=True)
            os.chmod(dst, e.mode)
        elif e.type == "symlink":
            os.symlink(e.target, dst)
        elif e.type == "file":
            shutil.copy2(src, dst)
        else:
            continue
        os.lchown(dst, 0, 0)


# ----------------------------------------------------------------------------------------- handler


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
        from backend.fs.copy import SourceView
        from backend.fs.fileops import apply_actions

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
