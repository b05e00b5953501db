"""File actions (copy, mkfile, mkdir, rm, symlink) applied to a writable root, as BuildKit does.

``apply_actions(root, actions, sources)`` runs the actions of an ``ir.ops.FileOp`` in order on the
directory ``root`` (an overlay-mounted rootfs: what is deleted here becomes a whiteout).  Nothing here
mounts or executes anything.  Every destination path is resolved inside ``root`` as chroot(2) would, so
an image symlink to ``/etc`` means ``root/etc``; every source path inside its source's root, so a copy
never reads outside it.  Failures raise :class:`FileOpError` with the path as the user wrote it.

Copy semantics follow BuildKit's file backend and ``fsutil/copy`` (see ``backend/fs/copy.py`` for the
selection rules):

* missing parents of the destination are created 0755, owned by ``owner`` (else 0:0), with mtime
  ``timestamp`` when set; ``create_dest_path`` off requires the parent of ``dest`` to exist;
* a trailing ``/`` on ``dest`` makes it a directory; a file into an existing directory, or a
  directory (without ``contents_only``) onto an existing path, lands at ``dest/<basename>``;
  a wildcard selecting several paths needs a directory ``dest``;
* an existing destination directory keeps its metadata when merged into at the top; directories
  below it take the source's; a file replaces a non-directory (a symlink is replaced, not followed)
  and refuses to replace a directory;
* owner: ``owner`` (by name or id, looked up in the *destination's* /etc/passwd and /etc/group; a
  numeric user alone gives gid = uid, as BuildKit) else the source's (a local context's: 0:0);
  ``chmod`` (octal or symbolic) on every copied file and directory; mtimes kept unless ``timestamp``;
  hard links inside one copy stay links; xattrs are copied (best effort); symlinks are copied as links;
* ``unpack`` (ADD): a local tar archive (plain, gzip, bzip2, xz, zstd) is extracted into ``dest``
  (``owner`` replaces the archive's owners), confined to it (``backend/fs/unpack.py``); any other
  file is copied.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from backend.fs.chmod import ChmodError, ModeSpec, parse_chmod
from backend.fs.copy import (
    DirTree,
    FileOpError,
    Node,
    SourceView,
    expand_wildcards,
    has_wildcards,
    plan_copy,
    resolve,
    walk_selection,
)
from backend.fs.unpack import DEFAULT_LIMITS, UnpackLimits, extract_archive, is_archive
from backend.fs.userdb import UserError, resolve_user
from ir.ops import CopyAction, FileAction, MkdirAction, MkfileAction, Owner, RmAction, SymlinkAction
from backend.fs import devnodes, safefs

__all__ = ["FileOpError", "SourceView", "UnpackLimits", "apply_actions", "resolve_owner"]

_PRIVATE_XATTR = ("trusted.overlay.", "user.overlay.")  # overlay's own, as root and rootless (userxattr)


Written = dict[str, tuple[str, int, int, int]]  # relpath -> (sha256 hex, size, mtime_ns, ctime_ns)


def apply_actions(root: Path, actions: Sequence[FileAction], sources: Sequence[SourceView], *,
                  limits: UnpackLimits = DEFAULT_LIMITS, written: Written | None = None,
                  warn: Callable[[str], None] | None = None) -> None:
    """Apply ``actions`` in order to the writable directory ``root``; ``sources[i]`` is input ``i``.

    ``written``, when given, receives the content digest of every regular file the copies wrote (hashed
    while copying), keyed by its path relative to ``root`` with its size, mtime and ctime afterwards:
    ``layer_tree_digest`` trusts a digest only while the file's stat still matches, so a committed
    layer is not read a second time.  Notes older than a non-copy action are dropped.  ``warn``
    receives what builds but is likely a mistake (a wildcard copying several paths onto one)."""
    root_s = os.path.realpath(os.fspath(root))
    for action in actions:
        if written is not None and (action.copy is None or action.copy.unpack):
            written.clear()  # mkfile, rm, unpacking, ... may rewrite a noted file within one clock tick
        if action.copy is not None:
            verb, what, run = "COPY", action.copy.src_path, \
                lambda a=action.copy: _copy(root_s, a, sources, limits, written, warn)
        elif action.mkfile is not None:
            verb, what, run = "mkfile", action.mkfile.path, lambda a=action.mkfile: _mkfile(root_s, a)
        elif action.mkdir is not None:
            verb, what, run = "mkdir", action.mkdir.path, lambda a=action.mkdir: _mkdir(root_s, a)
        elif action.rm is not None:
            verb, what, run = "rm", action.rm.path, lambda a=action.rm: _rm(root_s, a)
        elif action.symlink is not None:
            verb, what, run = "symlink", action.symlink.path, lambda a=action.symlink: _symlink(root_s, a)
        else:
            raise FileOpError("file action with nothing to do")
        try:
            run()
        except FileOpError as e:
            if e.message.startswith(f"{verb} failed"):
                raise
            raise FileOpError(f"{verb} failed: {e.message}", e.path or what) from None
        except (UserError, ChmodError) as e:
            raise FileOpError(f"{verb} failed: {e}", what) from None
        except OSError as e:
            raise FileOpError(f"{verb} failed: {_os_message(e, root_s, sources)}", what) from None
        except RecursionError:
            raise FileOpError(f"{verb} failed: directory tree too deep: {what}", what) from None


def _os_message(e: OSError, root: str, sources: Sequence[SourceView]) -> str:
    """An OSError as the user should read it: host prefixes stripped from the paths."""
    def strip(p) -> str:
        p = os.fspath(p)
        for base in [root, *(os.fspath(s.root) for s in sources)]:
            if p == base:
                return "/"
            if p.startswith(base.rstrip("/") + "/"):
                return p[len(base.rstrip("/")):]
        return p

    text = e.strerror or str(e)
    if e.filename is not None:
        text = f"{text}: {strip(e.filename)}"
    return text


# ---------------------------------------------------------------------------------------------- owners


def resolve_owner(root: str | Path, owner: Owner | None) -> tuple[int, int] | None:
    """``owner`` as uid, gid, names looked up in ``root``'s /etc/passwd and /etc/group (inside it).

    None stays None (keep the source's owner).  A numeric user without a group gives gid = uid
    (BuildKit ``readUser``); a named user without a group gets its primary group."""
    if owner is None:
        return None
    user, group = owner.user.strip(), owner.group.strip()
    if not user:
        uid, gid = 0, 0
    elif user.isascii() and user.isdigit():
        uid = gid = resolve_user(Path(root), f"{user}:0").uid  # (range-checked)
    else:
        found = resolve_user(Path(root), user)
        uid, gid = found.uid, found.gid
    if group:
        numeric = group.isascii() and group.isdigit()
        gid = resolve_user(Path(root), f"0:{group}" if numeric else f"{uid}:{group}", fast_path=numeric).gid
    return uid, gid


# ---------------------------------------------------------------------------------------------- dest helpers


class _Dest:
    """The destination root: resolution inside it and directory creation with owner and times."""

    def __init__(self, root: str, ids: tuple[int, int] | None, ts_ns: int | None) -> None:
        self.root = root
        self.tree = DirTree(Path(root))
        self.ids = ids or (0, 0)
        self.ts_ns = ts_ns
        self.created: list[str] = []

    def host(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def resolve(self, path: str, follow_final: bool = True) -> str:
        return resolve(self.tree, path, follow_final=follow_final)

    def mkdir_all(self, rel: str, display: str, mode: int = 0o755) -> None:
        """Create ``rel`` (already resolved) and its missing parents: ``mode``, owner, timestamp."""
        current = self.root
        for part in rel.split("/") if rel else []:
            current = os.path.join(current, part)
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                os.mkdir(current, 0o700)
                os.lchown(current, *self.ids)
                os.chmod(current, mode)
                self.created.append(current)
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise FileOpError(f"cannot create directory {display}: {_rel_display(self.root, current)} "
                                  "exists and is not a directory", display)

    def finish(self) -> None:
        if self.ts_ns is not None:
            for path in reversed(self.created):
                os.utime(path, ns=(self.ts_ns, self.ts_ns), follow_symlinks=False)


def _rel_display(root: str, host: str) -> str:
    return "/" + os.path.relpath(host, root) if host != root else "/"


def _times(ts: int) -> int | None:
    return ts * 1_000_000_000 if ts >= 0 else None


# ---------------------------------------------------------------------------------------------- copy


class _Writer:
    """Writes one copy action's entries: contents, links, owner, mode, xattrs, times."""

    def __init__(self, dest: _Dest, tree: DirTree, ids: tuple[int, int] | None, mode: ModeSpec | None,
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
                if name.startswith(_PRIVATE_XATTR):
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
                raise FileOpError(f"cannot copy to non-directory: {_rel_display(self.dest.root, target)}", display)
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
                raise FileOpError(f"cannot replace directory {_rel_display(self.dest.root, target)} with a file",
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
                        if name.startswith(_PRIVATE_XATTR):
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


def _copy(root: str, a: CopyAction, sources: Sequence[SourceView], limits: UnpackLimits,
          written: Written | None = None, warn: Callable[[str], None] | None = None) -> None:
    view = _source(sources, a.src)
    tree = DirTree(view)
    ids = resolve_owner(root, a.owner)
    mode = parse_chmod(a.chmod)
    ts_ns = _times(a.timestamp)
    dest = _Dest(root, ids, ts_ns)
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


# ---------------------------------------------------------------------------------------------- mkfile, mkdir, rm, symlink


def _mkfile(root: str, a: MkfileAction) -> None:
    ids = resolve_owner(root, a.owner) or (0, 0)
    dest = _Dest(root, ids, None)
    rel = dest.resolve(a.path)
    if not rel:
        raise FileOpError(f"cannot write a file at {a.path}", a.path)
    parent = posixpath.dirname(rel)
    if parent and not os.path.isdir(dest.host(parent)):
        raise FileOpError(f"parent directory of {a.path} does not exist", a.path)
    host = dest.host(rel)
    if os.path.isdir(host) and not os.path.islink(host):
        raise FileOpError(f"{a.path} is a directory", a.path)
    fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(a.data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.lchown(host, *ids)
    os.chmod(host, a.mode & 0o7777)
    if a.timestamp >= 0:
        os.utime(host, ns=(_times(a.timestamp),) * 2)


def _mkdir(root: str, a: MkdirAction) -> None:
    ids = resolve_owner(root, a.owner) or (0, 0)
    ts_ns = _times(a.timestamp)
    dest = _Dest(root, ids, ts_ns)
    rel = dest.resolve(a.path)
    host = dest.host(rel)
    if a.parents:  # BuildKit's MkdirAll gives created parents the action's mode and owner
        dest.mkdir_all(posixpath.dirname(rel), a.path, a.mode & 0o7777)
    try:
        os.mkdir(host, 0o700)
    except FileExistsError:
        if os.path.isdir(host):
            return  # BuildKit accepts an existing directory, parents or not
        raise FileOpError(f"{a.path} exists and is not a directory", a.path) from None
    except FileNotFoundError:
        raise FileOpError(f"parent directory of {a.path} does not exist", a.path) from None
    os.lchown(host, *ids)
    os.chmod(host, a.mode & 0o7777)
    dest.created.append(host)
    dest.finish()


def _rm(root: str, a: RmAction) -> None:
    tree = DirTree(Path(root))
    if a.allow_wildcard and has_wildcards(a.path):
        for rel in expand_wildcards(tree, a.path, follow_final=False):
            _rm_one(root, tree, "/" + rel, True)
        return
    _rm_one(root, tree, a.path, a.allow_not_found)


def _rm_one(root: str, tree: DirTree, path: str, allow_not_found: bool) -> None:
    clean = posixpath.normpath("/" + path)
    parent, base = posixpath.split(clean)
    if not base:
        raise FileOpError("cannot remove the root directory", path)
    parent_rel = resolve(tree, parent)
    host = os.path.join(root, parent_rel, base) if parent_rel else os.path.join(root, base)
    try:
        st = os.lstat(host)
    except (FileNotFoundError, NotADirectoryError):
        if allow_not_found:
            return
        raise FileOpError(f"{path}: no such file or directory", path) from None
    if stat.S_ISDIR(st.st_mode):
        safefs.rmtree(host)
    else:
        os.unlink(host)


def _symlink(root: str, a: SymlinkAction) -> None:
    ids = resolve_owner(root, a.owner) or (0, 0)
    dest = _Dest(root, ids, None)
    rel = dest.resolve(a.path, follow_final=False)
    if not rel:
        raise FileOpError(f"cannot create a symlink at {a.path}", a.path)
    parent = posixpath.dirname(rel)
    if parent and not os.path.isdir(dest.host(parent)):
        raise FileOpError(f"parent directory of {a.path} does not exist", a.path)
    host = dest.host(rel)
    try:
        os.symlink(a.target, host)
    except FileExistsError:
        raise FileOpError(f"{a.path} already exists", a.path) from None
    os.lchown(host, *ids)
    if a.timestamp >= 0:
        os.utime(host, ns=(_times(a.timestamp),) * 2, follow_symlinks=False)
