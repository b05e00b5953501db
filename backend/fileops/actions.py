"""File actions (copy, mkfile, mkdir, rm, symlink) applied to a writable root, as BuildKit does.

``apply_actions(root, actions, sources)`` runs the actions of an ``ir.ops.FileOp`` in order on the
directory ``root`` (an overlay-mounted rootfs: what is deleted here becomes a whiteout).  Nothing here
mounts or executes anything.  Every destination path is resolved inside ``root`` as chroot(2) would, so
an image symlink to ``/etc`` means ``root/etc``; every source path inside its source's root, so a copy
never reads outside it.  Failures raise :class:`FileOpError` with the path as the user wrote it.

Copy semantics follow BuildKit's file backend and ``fsutil/copy`` (see ``backend/fileops/selection.py`` and
``backend/fileops/treepaths.py`` for the selection rules; ``backend/fileops/copywrite.py`` writes a copy):

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
  (``owner`` replaces the archive's owners), confined to it (``backend/fileops/unpack.py``); any other
  file is copied.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from backend.fs import safefs
from backend.fileops.chmod import ChmodError
from backend.fileops.copy import DirTree, FileOpError, SourceView
from backend.fileops.copywrite import Written, apply_copy
from backend.fileops.destroot import Dest, resolve_owner, time_ns
from backend.fileops.treepaths import expand_wildcards, has_wildcards, resolve
from backend.fileops.unpack import DEFAULT_LIMITS, UnpackLimits
from backend.fs.userdb import UserError
from ir.ops import FileAction, MkdirAction, MkfileAction, RmAction, SymlinkAction

__all__ = ["FileOpError", "SourceView", "UnpackLimits", "apply_actions"]


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
                lambda a=action.copy: apply_copy(root_s, a, sources, limits, written, warn)
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


# ---------------------------------------------------------------------------------------------- mkfile, mkdir, rm, symlink


def _new_entry(root: str, a: MkfileAction | SymlinkAction, what: str, follow_final: bool
               ) -> tuple[tuple[int, int], str]:
    """The owner and host path of the entry ``a`` creates, resolved inside ``root``; its parent must exist."""
    ids = resolve_owner(root, a.owner) or (0, 0)
    dest = Dest(root, ids, None)
    rel = dest.resolve(a.path, follow_final=follow_final)
    if not rel:
        raise FileOpError(f"cannot {what} at {a.path}", a.path)
    parent = posixpath.dirname(rel)
    if parent and not os.path.isdir(dest.host(parent)):
        raise FileOpError(f"parent directory of {a.path} does not exist", a.path)
    return ids, dest.host(rel)


def _mkfile(root: str, a: MkfileAction) -> None:
    ids, host = _new_entry(root, a, "write a file", follow_final=True)
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
        os.utime(host, ns=(time_ns(a.timestamp),) * 2)


def _mkdir(root: str, a: MkdirAction) -> None:
    ids = resolve_owner(root, a.owner) or (0, 0)
    ts_ns = time_ns(a.timestamp)
    dest = Dest(root, ids, ts_ns)
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
    ids, host = _new_entry(root, a, "create a symlink", follow_final=False)
    try:
        os.symlink(a.target, host)
    except FileExistsError:
        raise FileOpError(f"{a.path} already exists", a.path) from None
    os.lchown(host, *ids)
    if a.timestamp >= 0:
        os.utime(host, ns=(time_ns(a.timestamp),) * 2, follow_symlinks=False)
