"""Read an image's files through its layers, as the merged root filesystem would show them, without
merging anything on disk and without ever leaving the layer directories.

For the readers of an image's own records (``backend.export.pkgdb``): a few known paths and a few
directory listings, where flattening the whole image (``backend.export.local``) or merging every
entry in memory (``backend.export.rootfs``) would cost a full walk of every layer.

The layers are overlay upper dirs, bottom first (docs/architecture.md): the topmost layer holding a
path wins; a whiteout (char 0:0) hides the path below; an opaque directory hides everything below
it; a directory over a directory merges with it. A symlink in the image is resolved *inside the
image*, as ``chroot`` would: an absolute target starts again at the image root, ``..`` stops at it,
so ``/var/lib/dpkg -> /../../../etc`` names the image's ``/etc``, never the host's. Every host path
this module builds is a layer root plus names it has just seen as real directories of that layer
(lstat, never followed), and files are opened with ``safefs.open_beneath`` (no symlink anywhere).
Everything read is bounded: symlink hops, path depth, bytes per file, names per directory.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from typing import Sequence

from backend.errors import BackendError
from backend.fs import safefs
from backend.fs.layerformat import is_opaque

MAX_HOPS = 40  # symlinks followed in one lookup: Linux's own limit (ELOOP)
MAX_DEPTH = 256  # path components in one lookup
MAX_NAMES = 100_000  # names listed in one directory; the rest is left out (and counted by the caller)
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Found:
    """The topmost entry at an image path: the layer that holds it and its path in that layer."""

    path: str  # in the image, absolute, symlinks resolved
    layer: int  # index into the view's layers (bottom first)
    rel: bytes  # path below that layer's root
    st: os.stat_result  # its lstat
    dirs: tuple[tuple[int, bytes], ...] = ()  # a directory: the layers' dirs that merge into it, top first

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.st.st_mode)


class TooLarge(BackendError):
    """A file is larger than the reader allows (the reader notes it and goes on)."""

    def __str__(self) -> str:
        return f"{self.args[0]}: larger than the reader allows"


class UnionView:
    """The merged view of ``layers`` (paths of overlay upper dirs, bottom first), read-only."""

    def __init__(self, layers: Sequence[str | os.PathLike[str]]) -> None:
        self.layers = [os.fsencode(os.fspath(p)) for p in layers]

    # --------------------------------------------------------------------------------------- lookup

    def _child(self, dirs: Sequence[tuple[int, bytes]], name: bytes) -> Found | None:
        """``name`` in the merged directory made of ``dirs`` (top first), not following it."""
        found: Found | None = None
        merged: list[tuple[int, bytes]] = []
        for layer, rel in dirs:
            crel = rel + b"/" + name if rel else name
            try:
                st = os.lstat(self.layers[layer] + b"/" + crel)
            except OSError:  # missing, or a path too long for this host: not there
                continue
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:  # a whiteout hides this layer's and those below
                break
            if found is None:
                found = Found("", layer, crel, st)
                if not stat.S_ISDIR(st.st_mode):
                    return found
            elif not stat.S_ISDIR(st.st_mode):  # a file below the directory is hidden, and all below it
                break
            merged.append((layer, crel))
            if is_opaque(self.layers[layer] + b"/" + crel):
                break
        if found is None:
            return None
        return Found("", found.layer, found.rel, found.st, tuple(merged))

    def root(self) -> Found:
        dirs = []
        for i in reversed(range(len(self.layers))):
            dirs.append((i, b""))
            if is_opaque(self.layers[i]):
                break
        return Found("/", len(self.layers) - 1, b"", os.stat_result((stat.S_IFDIR | 0o755,) + (0,) * 9),
                     tuple(dirs))

    def child(self, d: Found, name: str) -> Found | None:
        """``name`` in directory ``d`` (one step of ``lookup``, not followed: a walk's step)."""
        if not d.is_dir or name in ("", ".", "..") or "/" in name:
            return None
        entry = self._child(d.dirs, os.fsencode(name))
        if entry is None:
            return None
        return Found(d.path.rstrip("/") + "/" + name, entry.layer, entry.rel, entry.st, entry.dirs)

    def lookup(self, path: str, *, follow: bool = True) -> Found | None:
        """The entry at image path ``path`` (symlinks on the way resolved in the image; the last one
        too unless ``follow`` is false), or None when nothing is there, a loop or too many hops."""
        todo = [p for p in reversed(os.fsencode(path).split(b"/")) if p not in (b"", b".")]
        stack: list[tuple[bytes, Found]] = []  # the resolved components and their entries
        hops = 0
        while todo:
            name = todo.pop()
            if name == b"..":
                if stack:
                    stack.pop()
                continue
            if len(stack) >= MAX_DEPTH:
                return None
            parent = stack[-1][1] if stack else self.root()
            if not parent.is_dir:
                return None
            entry = self._child(parent.dirs, name)
            if entry is None:
                return None
            if stat.S_ISLNK(entry.st.st_mode) and (todo or follow):
                hops += 1
                if hops > MAX_HOPS:
                    return None
                try:
                    target = os.readlink(self.layers[entry.layer] + b"/" + entry.rel)
                except OSError:
                    return None
                if target.startswith(b"/"):
                    stack.clear()
                todo.extend(p for p in reversed(target.split(b"/")) if p not in (b"", b"."))
                continue
            stack.append((name, entry))
        if not stack:
            return self.root()
        name_path = "/" + "/".join(os.fsdecode(n) for n, _ in stack)
        last = stack[-1][1]
        return Found(name_path, last.layer, last.rel, last.st, last.dirs)

    # -------------------------------------------------------------------------------------- reading

    def listdir(self, d: Found, *, dirs_only: bool = False) -> list[str] | None:
        """The names in merged directory ``d`` (only those that are directories with ``dirs_only``),
        sorted; None when it holds more than ``MAX_NAMES`` (which of them would be kept depends on
        the order the filesystem lists them in: none is, so the answer stays the same). Whiteouts and
        what they hide are not listed. The type is the topmost layer's, from the directory entry (no lstat but for
        character devices, which may be whiteouts)."""
        seen: dict[bytes, bool] = {}  # name -> listed
        for layer, rel in d.dirs:
            try:
                it = os.scandir(self.layers[layer] + b"/" + rel if rel else self.layers[layer])
            except OSError:
                continue
            with it:
                for e in it:
                    if e.name in seen:
                        continue
                    if len(seen) >= MAX_NAMES:
                        return None
                    try:
                        is_dir = e.is_dir(follow_symlinks=False)
                        if not is_dir and not e.is_file(follow_symlinks=False) and not e.is_symlink():
                            st = e.stat(follow_symlinks=False)
                            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                                seen[e.name] = False
                                continue
                    except OSError:
                        continue
                    seen[e.name] = is_dir or not dirs_only
        return sorted(os.fsdecode(n) for n, shown in seen.items() if shown)

    def read(self, f: Found, limit: int) -> bytes:
        """The bytes of regular file ``f``; ``TooLarge`` beyond ``limit`` bytes, OSError if unreadable."""
        if not f.is_file:
            raise OSError(errno.EINVAL, "not a regular file", f.path)
        if f.st.st_size > limit:
            raise TooLarge(f.path)
        root = os.open(self.layers[f.layer], _DIR)
        try:
            fd = safefs.open_beneath(root, f.rel, os.O_RDONLY | os.O_NOFOLLOW)
        finally:
            os.close(root)
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(limit + 1)
        if len(data) > limit:
            raise TooLarge(f.path)
        return data

    def read_path(self, path: str, limit: int) -> bytes | None:
        """The file at image path ``path`` (resolved in the image), None when there is no regular file."""
        f = self.lookup(path)
        if f is None or not f.is_file:
            return None
        return self.read(f, limit)
