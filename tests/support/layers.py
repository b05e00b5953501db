"""What a layer directory holds, as the layer format promises it: the store and export tests compare
trees with this rather than each keeping its own walk."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from backend.fs.devnodes import device_xattr, placeholder_of

ROOT = os.geteuid() == 0


def snapshot(d: Path, *, mtimes: bool = True, skip_xattrs: tuple[str, ...] = ()) -> dict:
    """Everything the layer format promises, per path; hard links as groups of paths."""
    out: dict = {}
    inodes: dict[tuple[int, int], list[str]] = {}
    for root, dirs, files in os.walk(d):
        for n in sorted(dirs + files):
            p = os.path.join(root, n)
            rel = os.path.relpath(p, d)
            st = os.lstat(p)
            xa = {}
            try:
                for x in sorted(os.listxattr(p, follow_symlinks=False)):
                    if not x.startswith(skip_xattrs):
                        xa[x] = os.getxattr(p, x, follow_symlinks=False)
            except OSError:
                pass
            entry = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid, "xattrs": xa}
            if mtimes:
                entry["mtime"] = int(st.st_mtime)
            node = placeholder_of(p, st)  # the store keeps a device node as its placeholder
            if node is not None:
                xa.pop(device_xattr(), None)
                entry["mode"] = node[0] | stat.S_IMODE(st.st_mode)
                entry["rdev"] = (os.major(node[1]), os.minor(node[1]))
            elif stat.S_ISREG(st.st_mode):
                entry["sha"] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
                inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                entry["target"] = os.readlink(p)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                entry["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            out[rel] = entry
    out["<hardlinks>"] = sorted(sorted(v) for v in inodes.values() if len(v) > 1)
    return out
