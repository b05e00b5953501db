"""Writing what a COPY selected into the destination root: contents (hashed on the way, for the
layer digest), links, owner, ``chmod``, xattrs (overlay's own excepted) and times, and ADD's
archive extraction.  The rules are in ``backend.fileops.actions``."""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from backend.fs import devnodes
from backend.fileops.chmod import ModeSpec, parse_chmod
from backend.fileops.copy import DirTree, FileOpError, Node, SourceView
from backend.fileops.destroot import Dest, rel_display, resolve_owner, time_ns
from backend.fs.layerformat import OVERLAY_XATTR_PREFIXES
from backend.fileops.selection import plan_copy, walk_selection
from backend.fileops.unpack import UnpackLimits, extract_archive, is_archive
from ir.ops import CopyAction



Written = dict[str, tuple[str, int, int, int]]  # relpath -> (sha256 hex, size, mtime_ns, ctime_ns)


class _Writer:
    """Writes one copy action's entries: contents, links, owner, mode, xattrs, times."""

    def __init__(self, dest: Dest, tree: DirTree, ids: tuple[int, int] | None, mode: ModeSpec | None,
                 ts_ns: int | None, written: Written | None = None) -> None:
        self.dest, self.tree, self.ids, self.mode, self.ts_ns = dest, tree, ids, mode, ts_ns
        self.written = written
        self.reset_owner = tree.view.reset_owner
        self.links: dict[tuple[int, int], str] = {}
        self.dirs: list[tuple[str, Node, str]] = []  # finished post-order
        self.merged: list[tuple[str, Node]] = []  # existing top-level dirs: only their times change

    def owner_of(self, node: Node) -> tuple[int, int]:
        if self.ids is not None:
            return self.ids
        return (0, 0) if self.reset_owner else (node.uid, node.gid)

    def meta(self, target: str, node: Node, src: str) -> None:
        os.lchown(target, *self.owner_of(node))  # first: chown clears setuid bits
        if node.kind != "symlink":
            mode = self.mode.apply(node.mode, node.kind == "dir") if self.mode else stat.S_IMODE(node.mode)
            os.chmod(target, mode)
        with contextlib.suppress(OSError):
            for name in os.listxattr(src, follow_symlinks=False):
                if name.startswith(OVERLAY_XATTR_PREFIXES):
                    continue
                with contextlib.suppress(OSError):
                    os.setxattr(target, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
        self.times(target, node)

    def write(self, target: str, node: Node, src: str, *, top: bool, implied: bool, display: str) -> None:
        if node.kind == "dir":
            try:
                st = os.lstat(target)
            except FileNotFoundError:
                st = None
            if st is None:
                os.mkdir(target, 0o700)
                self.dirs.append((target, node, src))
            elif not stat.S_ISDIR(st.st_mode):
                raise FileOpError(f"cannot copy to non-directory: {rel_display(self.dest.root, target)}", display)
            elif not top and not implied:
                self.dirs.append((target, node, src))
            elif top:
                self.merged.append((target, node))  # fsutil restores the times of a merged-into dir
            return
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            st = None
        if self.written is not None:
            self.written.pop(target[len(self.dest.root) + 1:], None)
        if st is not None:
            if stat.S_ISDIR(st.st_mode):
                raise FileOpError(f"cannot replace directory {rel_display(self.dest.root, target)} with a file",
                                  display)
            os.unlink(target)
        if node.kind == "file":
            sst = node.st
            if sst is not None and sst.st_nlink > 1:
                key = (sst.st_dev, sst.st_ino)
                first = self.links.get(key)
                if first is not None:
                    os.link(first, target)
                    return
                self.links[key] = target
            self.copy_file(target, node, src)
            return
        elif node.kind == "symlink":
            os.symlink(node.target, target)
        elif node.st is not None and devnodes.is_device(node.mode, node.st.st_rdev):
            devnodes.make_placeholder_at(target, node.mode, node.st.st_rdev)  # never a node in the store
        elif node.st is not None and (stat.S_ISCHR(node.mode) or stat.S_ISFIFO(node.mode)):
            os.mknod(target, node.mode, node.st.st_rdev)
        else:
            return  # sockets are not content
        self.meta(target, node, src)

    def copy_file(self, target: str, node: Node, src: str) -> None:
        """A regular file with its metadata, through its descriptors (one path lookup each), hashed
        while copied (see ``apply_actions``' ``written``)."""
        fd_in = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            if not stat.S_ISREG(os.fstat(fd_in).st_mode):
                raise FileOpError(f"not a regular file: {src}")
            fd_out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                digest = _transfer_hashed(fd_in, fd_out)
                os.fchown(fd_out, *self.owner_of(node))  # first: chown clears setuid bits
                os.fchmod(fd_out, self.mode.apply(node.mode, False) if self.mode else stat.S_IMODE(node.mode))
                with contextlib.suppress(OSError):
                    for name in os.listxattr(fd_in):
                        if name.startswith(OVERLAY_XATTR_PREFIXES):
                            continue
                        with contextlib.suppress(OSError):
                            os.setxattr(fd_out, name, os.getxattr(fd_in, name))
                if self.ts_ns is not None:
                    os.utime(fd_out, ns=(self.ts_ns, self.ts_ns))
                elif node.st is not None:
                    os.utime(fd_out, ns=(node.st.st_atime_ns, node.st.st_mtime_ns))
                if self.written is not None:
                    st = os.fstat(fd_out)
                    self.written[target[len(self.dest.root) + 1:]] = (digest, st.st_size, st.st_mtime_ns,
                                                                     st.st_ctime_ns)
            finally:
                os.close(fd_out)
        finally:
            os.close(fd_in)

    def finish(self) -> None:
        for target, node, src in reversed(self.dirs):
            self.meta(target, node, src)
        for target, node in reversed(self.merged):
            self.times(target, node)

    def times(self, target: str, node: Node) -> None:
        if self.ts_ns is not None:
            os.utime(target, ns=(self.ts_ns, self.ts_ns), follow_symlinks=False)
        elif node.st is not None:
            os.utime(target, ns=(node.st.st_atime_ns, node.st.st_mtime_ns), follow_symlinks=False)


def _transfer_hashed(fd_in: int, fd_out: int) -> str:
    """Copy through user space, hashing on the way: the bytes written are the bytes hashed.  (No
    copy_file_range: into an overlay mount it fails with EXDEV anyway, and the layer digest would
    read the file back.)"""
    h = hashlib.sha256()
    while chunk := os.read(fd_in, 1 << 20):
        h.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd_out, view):]
    return h.hexdigest()


def _source(sources: Sequence[SourceView], index: int) -> SourceView:
    if not 0 <= index < len(sources):
        raise FileOpError(f"copy source input {index} does not exist ({len(sources)} inputs)")
    view = sources[index]
    return view if isinstance(view, SourceView) else SourceView(Path(view))


def apply_copy(root: str, a: CopyAction, sources: Sequence[SourceView], limits: UnpackLimits,
          written: Written | None = None, warn: Callable[[str], None] | None = None) -> None:
    view = _source(sources, a.src)
    tree = DirTree(view)
    ids = resolve_owner(root, a.owner)
    mode = parse_chmod(a.chmod)
    ts_ns = time_ns(a.timestamp)
    dest = Dest(root, ids, ts_ns)
    dest_path = "/" + a.dest.lstrip("/")
    dir_hint = dest_path.endswith("/") or dest_path.endswith("/.") or posixpath.normpath(dest_path) == "/"

    if not a.create_dest_path:
        parent = posixpath.dirname(dest.resolve(dest_path))
        if parent and not os.path.isdir(dest.host(parent)):
            raise FileOpError(f"destination directory {posixpath.dirname(posixpath.normpath(dest_path))} "
                              f"does not exist (for {a.dest})", a.dest)

    plan = plan_copy(tree, a)
    if not plan.selections:
        return
    head, tail = posixpath.split(dest_path)
    ensure = head if tail not in ("", ".") else dest_path
    dest.mkdir_all(dest.resolve(ensure), ensure)
    dest_rel = dest.resolve(posixpath.normpath(dest_path))
    dest_host = dest.host(dest_rel)

    if plan.wildcard and not a.parents and len(plan.selections) > 1 and not dir_hint and not os.path.isdir(dest_host):
        # BuildKit copies each match in turn onto the destination (``docopy``): files replace one
        # another and the last match wins.  Builds that rely on it exist, so follow, and say so.
        if warn is not None:
            names = [sel.name if len(sel.name) <= 200 else sel.name[:200] + "…" for sel in plan.selections]
            shown = ", ".join(names[:3]) + (f", … ({len(names)} in all)" if len(names) > 3 else "")
            last = (f" and {a.dest} ends up as {names[-1]}"
                    if all(sel.node.kind != "dir" for sel in plan.selections) else "")
            warn(f"{a.src_path} matches {len(names)} paths ({shown}) but the destination {a.dest} is not "
                 f"a directory: they are copied onto it one after the other, so a file replaces the one "
                 f"before{last}; end the destination with / to keep them all")

    writer = _Writer(dest, tree, ids, mode, ts_ns, written)
    same_root = os.path.realpath(tree.root) == root  # copying within one tree: read it all first
    for sel in plan.selections:
        src_host = tree.host(sel.rel)
        if a.unpack and sel.node.kind == "file" and is_archive(src_host):
            dest.mkdir_all(dest_rel, a.dest)
            extract_archive(src_host, dest_host, limits=limits, display=sel.name, owner=ids)
            continue
        try:
            dst_st = os.stat(dest_host)
        except (FileNotFoundError, NotADirectoryError):
            dst_st = None
        src_dir = sel.node.kind == "dir"
        target_rel = dest_rel
        if (not plan.contents_only and src_dir and dst_st is not None) or \
                (not src_dir and dst_st is not None and stat.S_ISDIR(dst_st.st_mode)):
            base = posixpath.basename(posixpath.normpath("/" + sel.name))
            if base not in ("", "/", ".", ".."):
                target_rel = posixpath.join(dest_rel, base) if dest_rel else base
        items = walk_selection(tree, sel, plan.include, plan.exclude)
        if same_root:
            items = list(items)
        if plan.contents_only and src_dir and dst_st is None:
            dest.mkdir_all(target_rel, a.dest)
        else:
            dest.mkdir_all(posixpath.dirname(target_rel), a.dest)
        for item in items:
            target = dest.host(posixpath.join(target_rel, item.comps) if item.comps else target_rel)
            if same_root and target == tree.host(item.rel):
                continue  # a path copied onto itself stays as it is
            writer.write(target, item.node, tree.host(item.rel), top=not item.comps, implied=item.implied,
                         display=a.src_path)
    writer.finish()
    dest.finish()
