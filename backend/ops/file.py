"""File ops: mount the base's layers with a fresh upper, apply the actions on the merged root with
read-only views of the source snapshots, and commit the upper as the new layer.

The actions themselves (Docker's COPY semantics, chown by name, …) belong to ``backend.fileops``;
local-context scanning to ``backend.context`` — until that lands, the small fallback scanner below
(``context_identity``, ``selection_digest``) keeps the solver working.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import hashlib
import os
import shutil
import stat
from pathlib import Path

from ir import ops as irops

from backend.errors import SolveError
from backend.ops import Step, Workspace
from backend.result import Snapshot

# ----------------------------------------------------------------------------------------- seam


def _context_module():
    try:
        from backend import context  # the other engineer's module, once it lands
    except ImportError:
        return None
    return context


def _matches(rel: str, pattern: str) -> bool:
    pattern = pattern.strip("/")
    if not pattern:
        return False
    parts = rel.split("/")
    return any(fnmatch.fnmatchcase("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1))


def _selected(rel: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    if include and not any(_matches(rel, p) for p in include):
        return False
    keep = True
    for p in exclude:
        if p.startswith("!"):
            if _matches(rel, p[1:]):
                keep = True
        elif _matches(rel, p):
            keep = False
    return keep


def walk_context(root: Path, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()):
    """(relative path, lstat) of every selected entry under ``root``, sorted, parents first."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(dirnames + filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            st = os.lstat(os.path.join(dirpath, name))
            if _selected(rel, include, exclude):
                out.append((rel, st))
    return out


def _entry_digest(h, root: Path, rel: str, st: os.stat_result) -> None:
    h.update(rel.encode("utf-8", "surrogateescape") + b"\0")
    h.update(f"{stat.S_IFMT(st.st_mode)}:{stat.S_IMODE(st.st_mode):o}\0".encode())
    path = os.path.join(root, rel)
    if stat.S_ISREG(st.st_mode):
        with open(path, "rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    elif stat.S_ISLNK(st.st_mode):
        h.update(os.readlink(path).encode("utf-8", "surrogateescape"))
    h.update(b"\n")


def context_identity(host_dir: Path, include: tuple[str, ...], exclude: tuple[str, ...]) -> str:
    """Content identity of a local context (names, types, modes, contents; never times)."""
    ctx = _context_module()
    if ctx is not None and hasattr(ctx, "context_identity"):
        return ctx.context_identity(host_dir, include, exclude)
    h = hashlib.sha256(b"irctl-context-v1\0")
    for rel, st in walk_context(host_dir, include, exclude):
        _entry_digest(h, host_dir, rel, st)
    return "sha256:" + h.hexdigest()


def selection_digest(snap: Snapshot, copy: irops.CopyAction) -> str:
    """Checksum of exactly the files ``copy`` selects from the local context ``snap``."""
    ctx = _context_module()
    if ctx is not None and hasattr(ctx, "selection_digest"):
        return ctx.selection_digest(snap.host_dir, copy, include=snap.include, exclude=snap.exclude)
    root = Path(snap.host_dir)  # type: ignore[arg-type]
    src = copy.src_path.strip("/")
    pattern_root = [src] if not copy.allow_wildcard else sorted(
        os.path.relpath(p, root) for p in glob.glob(os.path.join(root, src)))
    h = hashlib.sha256(b"irctl-selection-v1\0")
    entries = walk_context(root, snap.include, snap.exclude)
    for base in pattern_root:
        base = "" if base in (".", "") else base
        h.update(b"root:" + base.encode() + b"\n")
        for rel, st in entries:
            if not base or rel == base or rel.startswith(base + "/"):
                if (not copy.include or any(_matches(rel, p) for p in copy.include)) and not any(
                        _matches(rel, p) for p in copy.exclude):
                    _entry_digest(h, root, rel, st)
    return "sha256:" + h.hexdigest()


def copy_context(snap: Snapshot, dest: Path) -> None:
    """Copy a local context, with its include/exclude filters, into the plain dir ``dest``."""
    root = Path(snap.host_dir)  # type: ignore[arg-type]
    dest.mkdir(parents=True, exist_ok=True)
    for rel, st in walk_context(root, snap.include, snap.exclude):
        src, dst = root / rel, dest / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if stat.S_ISDIR(st.st_mode):
            dst.mkdir(exist_ok=True)
            os.chmod(dst, stat.S_IMODE(st.st_mode))
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), dst)
        elif stat.S_ISREG(st.st_mode):
            shutil.copy2(src, dst)


# ----------------------------------------------------------------------------------------- handler


def run_file(ws: Workspace, step: Step, op: irops.FileOp, inputs: list[Snapshot]) -> Snapshot:
    base = inputs[op.base] if op.base >= 0 else None
    lowers = ws.lowers(base) if base is not None else []
    base_ids = [f"sha256:{p.name}" for p in lowers]
    work = ws.temp_dir("file-")
    upper, wd = work / "upper", work / "work"
    upper.mkdir()
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(ws.snapshotter.mounted(lowers, upper, wd))
        from backend.copy import SourceView
        from backend.fileops import apply_actions

        sources: list[SourceView] = []
        for i, snap in enumerate(inputs):
            if not any(a.copy is not None and a.copy.src == i for a in op.actions):
                sources.append(SourceView(Path(os.devnull), label="unused input"))
            elif snap.host_dir is not None:
                sources.append(SourceView.context(Path(snap.host_dir), snap.include, snap.exclude))
            else:
                sources.append(SourceView(_readonly_view(ws, stack, snap)))
        apply_actions(root, op.actions, sources)
    lid = ws.commit(upper)
    return ws.snapshot(base_ids + ([lid] if lid else []))


def _readonly_view(ws: Workspace, stack: contextlib.ExitStack, snap: Snapshot) -> Path:
    lowers = ws.lowers(snap)
    work = ws.temp_dir("view-")
    (work / "upper").mkdir()
    return stack.enter_context(ws.snapshotter.mounted(lowers, work / "upper", work / "work"))
