"""The normal form: one meaning, one encoding (``spec/ir.md`` § 4, rule 9).

The canonical encoding (``ir.codec``) makes the *bytes* of a value unique; this module makes the
*value* unique where two values would mean the same thing — ``hello.txt`` and ``/hello.txt``,
``/tmp/`` and ``/tmp``, an absent tmpfs option map and an empty one, ``755`` and ``0755``.  Without
it two independent writers of the same build could produce different digests and never share a
cache.  Every rule lives here, once; ``ir.validate`` runs them on every document a reader accepts
and on every graph a frontend builds, and each refusal names the normal form so the writer knows
what to emit instead.

The forms chosen are the ones irctl's own frontends already emit, so no digest they produce
changed when the rules were written down.
"""

from __future__ import annotations

import posixpath
import re
from typing import Callable

from ir import ops

Report = Callable[[str, str], None]  # (message, key path suffix below the op body)

_OCTAL = re.compile(r"[0-7]{1,4}\Z")


def abs_path(path: str) -> str:
    """The normal form of an absolute path: one leading ``/``, no empty, ``.`` or ``..``
    component, no trailing ``/`` (``posixpath.normpath`` keeps a leading ``//``; this does not)."""
    return "/" + posixpath.normpath("/" + path).lstrip("/")


def _path(value: str, normal: str, where: str, err: Report) -> None:
    if value != normal:
        err(f"path {value!r} is not in normal form (normal form: {normal!r})", where)


def _trailing_slash(value: str, where: str, err: Report) -> None:
    """For paths the structural checks already hold to "absolute and clean" (``validate.clean_abs``,
    which reports everything else about them): the one defect left is a trailing ``/``."""
    normal = abs_path(value)
    if value == normal + "/":
        _path(value, normal, where, err)


def dest_path(dest: str) -> str:
    """A copy destination keeps one meaningful trailing ``/`` ("into this directory")."""
    normal = abs_path(dest)
    return normal + "/" if normal != "/" and dest.endswith(("/", "/.")) else normal


def src_path(action: ops.CopyAction) -> str:
    """Absolute, like every other path; with ``parents``, one ``/./`` marks the pivot."""
    if action.parents:
        pivot, sep, rest = action.src_path.partition("/./")
        if sep and rest.strip("/."):
            return abs_path(pivot).rstrip("/") + "/./" + abs_path(rest).lstrip("/")
    return abs_path(action.src_path)


def exec_op(ex: ops.ExecOp, err: Report) -> None:
    """Paths of an exec and its mounts' options.  Runs after the structural checks, on values
    they accepted (absolute, no ``..``), so only the spelling is left to refuse."""
    if ex.cwd.startswith("/"):
        _path(ex.cwd, abs_path(ex.cwd), "cwd", err)
    for i, m in enumerate(ex.mounts):
        where = f"mounts[{i}]"
        _trailing_slash(m.target, f"{where}.target", err)
        if m.selector and ".." not in m.selector.split("/"):
            normal = abs_path(m.selector)
            if normal == "/":
                err(f"selector {m.selector!r} selects the input's root (normal form: absent)", f"{where}.selector")
            else:
                _path(m.selector, normal, f"{where}.selector", err)
        if m.type in ("tmpfs", "ssh") and getattr(m, m.type) is None:
            article = "an" if m.type == "ssh" else "a"
            err(f"{article} {m.type} mount writes its {m.type!r} options, {{}} when all are defaults "
                "(normal form: present)", where)
        for name, options in (("cache", m.cache), ("secret", m.secret)):
            if options is not None and not options.id:
                err(f"the {name} id is required and must not be empty (normal form: a non-empty string)",
                    f"{where}.{name}.id")
        if m.ssh is not None and not m.ssh.id:
            err("the ssh id must not be empty (normal form: absent, which means 'default')", f"{where}.ssh.id")


def file_action(action: ops.FileAction, err: Report) -> None:
    """Paths and modes of one file action, after the structural checks accepted it."""
    c = action.copy
    if c is not None:
        if ".." not in c.src_path.split("/"):
            _path(c.src_path, src_path(c), "copy.src_path", err)
        if c.dest.startswith("/") and ".." not in c.dest.split("/"):
            _path(c.dest, dest_path(c.dest), "copy.dest", err)
        if _OCTAL.match(c.chmod) and len(c.chmod) != 4:
            err(f"an octal chmod has four digits (normal form: '{int(c.chmod, 8):04o}')", "copy.chmod")
        return
    for kind in ("mkfile", "mkdir", "rm", "symlink"):
        act = getattr(action, kind)
        if act is not None:
            _trailing_slash(act.path, f"{kind}.path", err)


def source_op(src: ops.SourceOp, err: Report) -> None:
    """Names that are required must not be empty; a git sub-directory is relative and clean."""
    if src.oci_layout is not None and not src.oci_layout.name:
        err("an OCI layout name must not be empty", "oci_layout.name")
    elif src.git is not None:
        if not src.git.remote:
            err("a git remote must not be empty", "git.remote")
        subdir = src.git.subdir
        if subdir and ".." not in subdir.split("/"):
            normal = abs_path(subdir).lstrip("/")
            if not normal:
                err(f"subdir {subdir!r} is the whole checkout (normal form: absent)", "git.subdir")
            elif subdir != normal:
                err(f"subdir {subdir!r} is not in normal form (normal form: {normal!r})", "git.subdir")
