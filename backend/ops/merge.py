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

from backend.ops import Step, Workspace, layer_id_of
from backend.result import Snapshot
from backend.snapshot import _copy_entry, apply_layers


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
    """Write into ``out`` what turns tree ``a`` into tree ``b``; True when anything differs."""
    changed = False
    names_a = set(os.listdir(a))
    for name in sorted(os.listdir(b)):
        pa, pb, po = os.path.join(a, name), os.path.join(b, name), os.path.join(out, name)
        sb = os.lstat(pb)
        sa = os.lstat(pa) if name in names_a else None
        if stat.S_ISDIR(sb.st_mode):
            os.mkdir(po)
            sub = _diff_dirs(pa, pb, po) if sa is not None and stat.S_ISDIR(sa.st_mode) else _copy_tree(pb, po)
            meta_same = sa is not None and stat.S_ISDIR(sa.st_mode) and (sa.st_mode, sa.st_uid, sa.st_gid) == (
                sb.st_mode, sb.st_uid, sb.st_gid)
            if sa is not None and not stat.S_ISDIR(sa.st_mode):
                sub = True
            if not sub and meta_same:
                os.rmdir(po)
            else:
                os.chown(po, sb.st_uid, sb.st_gid)
                os.chmod(po, stat.S_IMODE(sb.st_mode))
                changed = True
        elif sa is None or not _same(pa, pb, sa, sb):
            _copy_entry(pb, po, sb)
            changed = True
    for name in sorted(names_a - set(os.listdir(b))):
        os.mknod(os.path.join(out, name), stat.S_IFCHR, 0)
        changed = True
    return changed


def _copy_tree(src: str, dst: str) -> bool:
    for name in sorted(os.listdir(src)):
        s, d = os.path.join(src, name), os.path.join(dst, name)
        st = os.lstat(s)
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(d)
            _copy_tree(s, d)
            os.chown(d, st.st_uid, st.st_gid)
            os.chmod(d, stat.S_IMODE(st.st_mode))
        else:
            _copy_entry(s, d, st)
    return True
