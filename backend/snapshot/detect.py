"""Which snapshotter a build uses: `$IRCTL_SNAPSHOTTER`, else a probe (kernel overlayfs, then
fuse-overlayfs, then copying), a positive overlay probe remembered per boot, filesystem and user."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from pathlib import Path

from backend.fs.layerformat import is_opaque, is_whiteout
from backend.snapshot.base import Snapshotter, SnapshotError, rmtree_scratch
from backend.snapshot.copydiff import CopySnapshotter
from backend.snapshot.fuse import FuseOverlaySnapshotter
from backend.snapshot.overlay import OverlaySnapshotter


@functools.cache
def _overlay_works(tmp_root: str, kind: str = "overlay") -> bool:
    """Probe: a deleted file becomes a whiteout, a re-created dir an opaque one, in the upper dir."""
    snap = FuseOverlaySnapshotter() if kind == "fuse-overlayfs" else OverlaySnapshotter()
    if kind == "fuse-overlayfs" and (shutil.which("fuse-overlayfs") is None or not os.access("/dev/fuse", os.R_OK | os.W_OK)):
        return False
    try:
        base = tempfile.mkdtemp(prefix=".overlay-probe.", dir=tmp_root)
    except OSError:
        return False
    try:
        for d in ("lower/d", "upper", "work", "merged"):
            os.makedirs(os.path.join(base, d))
        Path(base, "lower", "f").write_bytes(b"x")
        Path(base, "lower", "d", "g").write_bytes(b"x")
        with snap.mounted([Path(base, "lower")], Path(base, "upper"), Path(base, "work")) as root:
            os.unlink(root / "f")
            os.unlink(root / "d" / "g")
            os.rmdir(root / "d")
            os.mkdir(root / "d")
        return is_whiteout(os.lstat(os.path.join(base, "upper", "f"))) and is_opaque(os.path.join(base, "upper", "d"))
    except (OSError, SnapshotError):
        return False
    finally:
        with contextlib.suppress(OSError, SnapshotError):
            rmtree_scratch(base)


def _probe_key(tmp_root: Path) -> str | None:
    """What a positive overlay probe depends on: this boot of this kernel, the filesystem, who we
    are and with which user-namespace id maps (rootless mounts use ``userxattr``)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        # the id maps, not the namespace's inode: a rootless build makes a new namespace every
        # time, with the same maps (the user's subordinate ids), so the answer is the same
        userns = " ".join(w for m in ("uid", "gid") for w in Path(f"/proc/self/{m}_map").read_text().split())
        dev = os.stat(tmp_root).st_dev
    except OSError:
        return None
    return f"overlay-probe-v1 {os.uname().release} {boot} {dev} {os.geteuid()} {userns}"


def detect_snapshotter(tmp_root: Path, *, probe_dir: Path | None = None, memo: Path | None = None) -> Snapshotter:
    """The best snapshotter for layers stored under `tmp_root`.

    Kernel overlayfs first, then fuse-overlayfs, then copying. `$IRCTL_SNAPSHOTTER=overlay|fuse-overlayfs|copy`
    overrides the probe.  `probe_dir` (same filesystem): where the probe mounts, e.g. a build's
    work dir, which the next build reaps if this one is killed mid-probe (default `tmp_root`).
    `memo`: a file remembering a positive overlay probe for this boot, filesystem and user (see
    `_probe_key`), so later builds skip the probe's mount (10-20 ms); other results are not kept."""
    forced = os.environ.get("IRCTL_SNAPSHOTTER", "").strip().lower()
    if forced == "copy":
        return CopySnapshotter()
    if forced == "overlay":
        return OverlaySnapshotter()
    if forced == "fuse-overlayfs":
        return FuseOverlaySnapshotter()
    if forced:
        raise SnapshotError(f"IRCTL_SNAPSHOTTER={forced!r}: expected 'overlay', 'fuse-overlayfs' or 'copy'")
    Path(tmp_root).mkdir(parents=True, exist_ok=True)
    key = _probe_key(tmp_root) if memo is not None else None
    if key is not None:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if Path(memo).read_text() == key:  # type: ignore[arg-type]
                return OverlaySnapshotter()
    for kind, cls in (("overlay", OverlaySnapshotter), ("fuse-overlayfs", FuseOverlaySnapshotter)):
        if _overlay_works(os.path.abspath(probe_dir or tmp_root), kind):
            if kind == "overlay" and key is not None:
                with contextlib.suppress(OSError):
                    fd, tmp = tempfile.mkstemp(prefix=".tmp-probe-", dir=probe_dir or tmp_root)
                    with os.fdopen(fd, "w") as f:
                        f.write(key)
                    os.replace(tmp, memo)  # type: ignore[arg-type]
            return cls()
    return CopySnapshotter()
