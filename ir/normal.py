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

import ipaddress
import posixpath
import re
from typing import Callable

from ir import ops

Report = Callable[[str, str], None]  # (message, key path suffix below the op body)

_OCTAL = re.compile(r"[0-7]{1,4}\Z")
_EMPTY_OWNER = ops.Owner()  # 0:0 (on a copy it differs from an absent owner, which keeps the source's)


def abs_path(path: str) -> str:
    """The normal form of an absolute path: one leading ``/``, no empty, ``.`` or ``..``
    component, no trailing ``/`` (``posixpath.normpath`` keeps a leading ``//``; this does not)."""
    return "/" + posixpath.normpath("/" + path).lstrip("/")


def _plainly_normal(path: str) -> bool:
    """A cheap sufficient test for ``path == abs_path(path)``, true for nearly every real path, so
    ``normpath`` runs only on the rare suspect one (the graph check runs once per op)."""
    return path == "/" or (path[:1] == "/" and path[-1] != "/" and "//" not in path and "/." not in path)


def _path(value: str, normal: str, where: str, err: Report) -> None:
    if value != normal:
        err(f"path {value!r} is not in normal form (normal form: {normal!r})", where)


def _abs(value: str, where: str, err: Report) -> None:
    if not _plainly_normal(value):
        _path(value, abs_path(value), where, err)


def _trailing_slash(value: str, where: str, err: Report) -> None:
    """For paths the structural checks already hold to "absolute and clean" (``validate.clean_abs``,
    which reports everything else about them): the one defect left is a trailing ``/``."""
    if value != "/" and value == abs_path(value) + "/":
        _path(value, value[:-1], where, err)


def selector(value: str) -> str:
    """A mount's sub-path of its input: absolute and normal, the input's root written as ``""``.
    A value with a ``..`` component is left alone, for ``ir.validate`` to refuse as an escape."""
    if ".." in value.split("/"):
        return value
    normal = abs_path(value) if value else "/"
    return "" if normal == "/" else normal


def dest_path(dest: str) -> str:
    """A copy destination keeps one meaningful trailing ``/`` ("into this directory")."""
    normal = abs_path(dest)
    return normal + "/" if normal != "/" and dest.endswith(("/", "/.")) else normal


def src_path(action: ops.CopyAction) -> str:
    """Absolute, like every other path; with ``parents``, one ``/./`` marks the pivot.  A value
    with a ``..`` component is left alone, for ``ir.validate`` to refuse as an escape."""
    if ".." in action.src_path.split("/"):
        return action.src_path
    if action.parents:
        pivot, sep, rest = action.src_path.partition("/./")
        if sep and rest.strip("/."):
            return abs_path(pivot).rstrip("/") + "/./" + abs_path(rest).lstrip("/")
    return abs_path(action.src_path)


def exec_op(ex: ops.ExecOp, err: Report) -> None:
    """Paths of an exec and its mounts' options.  Runs after the structural checks, on values
    they accepted (absolute, no ``..``), so only the spelling is left to refuse.  Key paths are
    built only on an error: this runs once per exec of every graph."""
    if ex.cwd.startswith("/"):
        _abs(ex.cwd, "cwd", err)
    for i, m in enumerate(ex.mounts):
        if m.target[-1:] == "/":
            _trailing_slash(m.target, f"mounts[{i}].target", err)
        sel = m.selector
        if sel and (sel == "/" or not _plainly_normal(sel)) and ".." not in sel.split("/"):
            if not selector(sel):
                err(f"selector {sel!r} selects the input's root (normal form: absent)", f"mounts[{i}].selector")
            else:
                _path(sel, selector(sel), f"mounts[{i}].selector", err)
        t = m.type
        if t == "bind":
            continue  # (``ir.validate`` refuses options on a bind mount)
        options = getattr(m, t)
        if options is None:
            if t in ("tmpfs", "ssh"):
                err(f"{'an' if t == 'ssh' else 'a'} {t} mount writes its {t!r} options, {{}} when all are "
                    "defaults (normal form: present)", f"mounts[{i}]")
        elif t != "tmpfs" and not options.id:
            err("the ssh id must not be empty (normal form: absent, which means 'default')" if t == "ssh" else
                f"the {t} id is required and must not be empty (normal form: a non-empty string)",
                f"mounts[{i}].{t}.id")


def exec_sandbox(ex: ops.ExecOp, err: Report) -> None:
    """An address has one spelling (``::1``, ``10.0.0.1``: what ``ipaddress`` prints) and the
    limits one order (by name, each once), so the same ``--add-host``/``--ulimit`` flags give the
    same digest however they were typed."""
    for i, h in enumerate(ex.extra_hosts):
        try:
            canonical = str(ipaddress.ip_address(h.ip))
        except ValueError:
            continue  # ``ir.validate`` refused it
        if canonical != h.ip:
            err(f"address {h.ip!r} is not in canonical form (normal form: {canonical!r})", f"extra_hosts[{i}].ip")
    names = [u.name for u in ex.ulimits]
    if names != sorted(set(names)):
        err("ulimits are sorted by name, each name at most once (normal form: sorted, unique)", "ulimits")


def file_action(action: ops.FileAction, err: Report) -> None:
    """Paths, modes and owners of one file action, after the structural checks accepted it."""
    c = action.copy
    if c is not None:
        if not (_plainly_normal(c.src_path) or ".." in c.src_path.split("/")):
            _path(c.src_path, src_path(c), "copy.src_path", err)
        dest = c.dest
        if not _plainly_normal(dest.rstrip("/") or "/") and dest.startswith("/") and ".." not in dest.split("/"):
            _path(dest, dest_path(dest), "copy.dest", err)
        if c.chmod and len(c.chmod) != 4 and _OCTAL.match(c.chmod):
            err(f"an octal chmod has four digits (normal form: '{int(c.chmod, 8):04o}')", "copy.chmod")
        return
    kind = "mkdir" if action.mkdir is not None else "mkfile" if action.mkfile is not None else \
        "symlink" if action.symlink is not None else "rm"
    act = getattr(action, kind)
    if act.path[-1:] == "/":
        _trailing_slash(act.path, f"{kind}.path", err)
    if kind != "rm" and act.owner == _EMPTY_OWNER:
        err("an owner with neither user nor group is 0:0, which is what an absent owner means "
            "(normal form: absent)", f"{kind}.owner")


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
