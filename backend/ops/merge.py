"""Merge and diff.

Merge concatenates the inputs' layer lists (later inputs win, their whiteouts apply): no file is
copied.  Diff returns the upper's extra layers when the upper is built on the lower; otherwise it
flattens both and writes a layer of the differences (whiteouts for what the upper deleted).
"""

from __future__ import annotations

import filecmp
import hashlib
import os
import stat

from backend.fs import safefs
from backend.ops.handler import OpHandler
from backend.ops.workspace import Step, Workspace, layer_id_of
from backend.result import Snapshot
from backend.snapshot.layertree import apply_layers, copy_entry


class MergeHandler(OpHandler):
    kind = "merge"

    def run(self, ws: Workspace, step: Step, inputs: list[Snapshot]) -> list[Snapshot]:
        return [run_merge(ws, step, inputs)]


class DiffHandler(OpHandler):
    kind = "diff"
    cost = 2.0

    def run(self, ws: Workspace, step: Step, inputs: list[Snapshot]) -> list[Snapshot]:
        return [run_diff(ws, step, inputs[0], inputs[1])]


def merge_identity(inputs: list[Snapshot]) -> str:
    h = hashlib.sha256(b"irctl-merge-v1\0")
    for s in inputs:
        h.update(s.identity.encode() + b"\n")
    return "sha256:" + h.hexdigest()


def run_merge(ws: Workspace, step: Step, inputs: list[Snapshot]) -> Snapshot:
    ids: list[str] = []
    for s in inputs:
        if s.host_dir is not None:
            ids.append(ws.local_layer(s))
        else:
            ids.extend(layer_id_of(p) for p in s.layers)
    return ws.snapshot(ids, identity=merge_identity(inputs))


def run_diff(ws: Workspace, step: Step, lower: Snapshot, upper: Snapshot) -> Snapshot:
    low = [ws.local_layer(lower)] if lower.host_dir is not None else [layer_id_of(p) for p in lower.layers]
    up = [ws.local_layer(upper)] if upper.host_dir is not None else [layer_id_of(p) for p in upper.layers]
    if up[:len(low)] == low:
        return ws.snapshot(up[len(low):])
    work = ws.temp_dir("diff-")
    a, b, out = work / "a", work / "b", work / "layer"
    apply_layers(ws.lowers(lower), a)
    apply_layers(ws.lowers(upper), b)
    out.mkdir()
    _diff_dirs(str(a), str(b), str(out))
    lid = ws.commit(out)
    return ws.snapshot([lid] if lid else [])


def _same(a: str, b: str, sa: os.stat_result, sb: os.stat_result) -> bool:
    if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode) or (sa.st_mode, sa.st_uid, sa.st_gid) != (
            sb.st_mode, sb.st_uid, sb.st_gid):
        return False
    if stat.S_ISLNK(sa.st_mode):
        return os.readlink(a) == os.readlink(b)
    if stat.S_ISREG(sa.st_mode):
        return sa.st_size == sb.st_size and filecmp.cmp(a, b, shallow=False)
    if stat.S_ISCHR(sa.st_mode) or stat.S_ISBLK(sa.st_mode):
        return sa.st_rdev == sb.st_rdev
    return True


def _diff_dirs(a: str, b: str, out: str) -> bool:
    """Write into ``out`` what turns tree ``a`` into tree ``b``; True when anything differs.

    Iterative (trees may nest deeper than Python's stack): a pre-order pass writes every changed
    entry and whiteout and makes every directory of ``b`` in ``out``; a post-order pass (reverse
    pre-order) removes the directories that hold no change and whose owner and mode are unchanged."""
    # per dir of out: [pa, pb, po, copied (new or replaced: always kept), direct change, kept child]
    dirs: list[list] = []
    index: dict[str, int] = {}
    root_changed = False
    stack: list[tuple[str, str, str, bool, int]] = [(a, b, out, False, -1)]  # (pa, pb, po, copying, parent)
    while stack:
        da, db, do, copying, parent = stack.pop()
        if do.count("/") - out.count("/") > safefs.MAX_DEPTH:
            raise safefs.too_deep(os.path.relpath(do, out), "in a diff")
        names_a = set() if copying else set(os.listdir(da))
        changed = False
        for name in sorted(os.listdir(db)):
            pa, pb, po = os.path.join(da, name), os.path.join(db, name), os.path.join(do, name)
            sb = os.lstat(pb)
            sa = os.lstat(pa) if name in names_a else None
            if stat.S_ISDIR(sb.st_mode):
                os.mkdir(po)
                child_copy = copying or sa is None or not stat.S_ISDIR(sa.st_mode)
                index[po] = len(dirs)
                dirs.append([pa, pb, po, sb, sa, child_copy, False, False, parent if parent >= 0 else None, do])
                stack.append((pa, pb, po, child_copy, index[po]))
            elif copying or sa is None or not _same(pa, pb, sa, sb):
                copy_entry(pb, po, sb)
                changed = True
        if not copying:
            for name in sorted(names_a - set(os.listdir(db))):
                os.mknod(os.path.join(do, name), stat.S_IFCHR, 0)
                changed = True
        if parent < 0:
            root_changed = root_changed or changed
        else:
            dirs[parent][6] = dirs[parent][6] or changed
    for pa, pb, po, sb, sa, copied, direct, kept_child, parent, _ in reversed(dirs):
        sub = copied or direct or kept_child
        meta_same = sa is not None and stat.S_ISDIR(sa.st_mode) and (sa.st_mode, sa.st_uid, sa.st_gid) == (
            sb.st_mode, sb.st_uid, sb.st_gid)
        if not sub and meta_same:
            os.rmdir(po)
            continue
        os.chown(po, sb.st_uid, sb.st_gid)
        os.chmod(po, stat.S_IMODE(sb.st_mode))
        if parent is None:
            root_changed = True
        else:
            dirs[parent][7] = True
    return root_changed
