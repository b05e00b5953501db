"""Paths inside a container root: resolving them without escaping it, and clearing mount stubs from a layer.

When the runtime mounts /proc, /etc/hosts, a bind or a secret onto a path missing from the image, it
creates an empty dir or file there first, and on overlayfs that stub lands in the upper dir, i.e. in the
new layer. `remove_mount_stubs` takes them out again (like BuildKit does), together with parent dirs that
were created or copied up only to hold them. A WORKDIR the executor created is not a stub and stays.

Paths are resolved as `chroot` would (`resolve_in_root`): an absolute symlink restarts at the root and
`..` stops there, so a hostile image cannot point a lookup at the host. The same resolution works over a
stack of layers (`LayerView`), honouring whiteouts and opaque dirs, without mounting anything.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from backend.fs import safefs
from backend.fs.layerformat import is_opaque, is_whiteout, opaque_xattr

MAX_SYMLINKS = 40


class PathEscapeError(safefs.TreeError):
    """Too many symlinks while resolving a path inside a root."""


class DirView:
    """A plain directory seen as a root filesystem."""

    def __init__(self, root: Path):
        self.root = os.fspath(root)

    def lstat(self, rel: str) -> os.stat_result | None:
        try:
            return os.lstat(os.path.join(self.root, rel)) if rel else os.lstat(self.root)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def readlink(self, rel: str) -> str:
        return os.readlink(os.path.join(self.root, rel))


class LayerView:
    """The merged view of layers (bottom first) in overlay upper-dir format, read without mounting."""

    def __init__(self, lowers: Sequence[Path]):
        self.layers = [os.fspath(p) for p in lowers]

    def locate(self, rel: str) -> str | None:
        """Host path of the top-most entry visible at `rel`, or None when absent or whited out."""
        if not rel:
            return self.layers[-1] if self.layers else None
        parts = rel.split("/")
        for layer in reversed(self.layers):
            p, hidden_below = layer, False
            for i, part in enumerate(parts):
                p = os.path.join(p, part)
                try:
                    st = os.lstat(p)
                except (FileNotFoundError, NotADirectoryError):
                    if hidden_below:
                        return None
                    break  # nothing here in this layer: look lower
                if is_whiteout(st):
                    return None
                if i == len(parts) - 1:
                    return p
                if not stat.S_ISDIR(st.st_mode):
                    return None  # a non-dir in this layer hides everything below the path
                hidden_below = hidden_below or is_opaque(p)
            else:  # pragma: no cover - loop always returns or breaks
                return None
        return None

    def lstat(self, rel: str) -> os.stat_result | None:
        p = self.locate(rel)
        return os.lstat(p) if p else None

    def readlink(self, rel: str) -> str:
        p = self.locate(rel)
        if p is None:
            raise FileNotFoundError(rel)
        return os.readlink(p)


def resolve_in_root(view: DirView | LayerView | Path, path: str, *, follow_final: bool = True) -> str:
    """Resolve `path` inside the root as chroot(2) would; returns it relative to the root ('' = root).

    Missing components are kept as they are; symlinks are followed (at most 40) but never leave the root."""
    if not isinstance(view, (DirView, LayerView)):
        view = DirView(view)
    pending = [c for c in path.split("/") if c and c != "."]
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = "/".join([*resolved, part])
        st = view.lstat(candidate)
        if st is not None and stat.S_ISLNK(st.st_mode) and (pending or follow_final):
            links += 1
            if links > MAX_SYMLINKS:
                raise PathEscapeError(f"too many levels of symbolic links resolving {path!r}")
            target = view.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            pending = [c for c in target.split("/") if c and c != "."] + pending
            continue
        resolved.append(part)
    return "/".join(resolved)


def mkdirs_in_root(root: Path, path: str, *, uid: int, gid: int, mode: int = 0o755) -> Path:
    """Create `path` (a dir, resolved inside `root`) and missing parents owned by uid:gid; return it."""
    rel = resolve_in_root(DirView(root), path)
    current = os.fspath(root)
    for part in rel.split("/") if rel else []:
        current = os.path.join(current, part)
        try:
            os.mkdir(current, mode)
        except FileExistsError:
            if not os.path.isdir(current) or os.path.islink(current):
                raise NotADirectoryError(f"{path}: {part} exists and is not a directory") from None
            continue
        os.chown(current, uid, gid)
        os.chmod(current, mode)
    return Path(current)


def _opaque_fd(fd: int) -> bool:
    try:
        return os.getxattr(fd, opaque_xattr()) == b"y"
    except OSError:
        return False


def _empty_at(dir_fd: int, name: bytes, st: os.stat_result) -> bool:
    if stat.S_ISDIR(st.st_mode):
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError:
            return False
        try:
            return not os.listdir(fd) and not _opaque_fd(fd)
        finally:
            os.close(fd)
    return stat.S_ISREG(st.st_mode) and st.st_size == 0


def _remove_if_stub(upper_fd: int, rel: str, lower: os.stat_result | None, *, parent: bool) -> bool:
    """Remove `rel` from the upper dir if it is still a stub; False when it is not there, not empty,
    or reached only through something the step replaced (a symlink or a file on the way: never
    followed, the layer keeps it as the step left it)."""
    opened = safefs.open_parent(upper_fd, rel)
    if opened is None:
        return False
    pfd, name = opened
    try:
        st = safefs.lstat_at(pfd, name)
        if st is None or not _empty_at(pfd, name, st):
            return False
        if parent:
            same = lower is not None and stat.S_ISDIR(lower.st_mode) and (
                lower.st_mode, lower.st_uid, lower.st_gid) == (st.st_mode, st.st_uid, st.st_gid)
            if not stat.S_ISDIR(st.st_mode) or not (lower is None or same):
                return False
        (os.rmdir if stat.S_ISDIR(st.st_mode) else os.unlink)(name, dir_fd=pfd)
        return True
    finally:
        os.close(pfd)


def remove_mount_stubs(upper: Path, lowers: Sequence[Path], targets: Iterable[str],
                       keep: Iterable[str] = ()) -> list[str]:
    """Remove from the layer `upper` the stubs created only to mount on `targets` (container paths).

    A target is removed when it is absent from the lowers and still an empty dir or empty file in
    `upper`; then each parent up the path, while it is empty in `upper` and either absent from the lowers
    or present there as a dir with the same owner and mode (copied up only to hold the stub). Returns the
    removed paths, relative to the root. Paths in `keep` (e.g. the working directory the executor created,
    which may also be a mount target) and their parents are never removed.

    `upper` was written by the step: every lookup in it goes through `safefs.open_parent`, so a
    parent the step replaced with a symlink (to the host, or `../../..`) is never followed."""
    view = LayerView(lowers)
    kept: set[str] = set()
    for path in keep:
        rel = resolve_in_root(view, path)
        while rel:
            kept.add(rel)
            rel = os.path.dirname(rel)
    removed: list[str] = []
    upper_fd = os.open(upper, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for target in sorted(set(targets), key=lambda t: -t.count("/")):
            rel = resolve_in_root(view, target)
            if not rel or rel in kept or view.lstat(rel) is not None:
                continue
            if not _remove_if_stub(upper_fd, rel, None, parent=False):
                continue
            removed.append(rel)
            parent = os.path.dirname(rel)
            while parent and parent not in kept:
                if not _remove_if_stub(upper_fd, parent, view.lstat(parent), parent=True):
                    break
                removed.append(parent)
                parent = os.path.dirname(parent)
    finally:
        os.close(upper_fd)
    return removed
