"""Named features (BuildKit calls them capabilities) that a graph declares it uses.

A reader that meets a feature it does not know refuses the graph and names the feature, instead
of failing somewhere obscure.  Writers declare exactly the features their ops use: ``used_by``
computes that set, and validation checks the declaration against it.
"""

from __future__ import annotations

from ir import ops

# Every feature of IR v1 and what makes a graph use it (``spec/ir.md`` § Features is generated from this).
DESCRIPTIONS = {
    "source.image": "a `source` op with `image`",
    "source.local": "a `source` op with `local`",
    "source.http": "a `source` op with `http`",
    "source.git": "a `source` op with `git`",
    "source.oci_layout": "a `source` op with `oci_layout`",
    "source.scratch": "a `source` op with `scratch`",
    "exec": "an `exec` op",
    "exec.network": "an `exec` op whose `network` is not `default`",
    "exec.security.insecure": "an `exec` op whose `security` is `insecure`",
    "exec.platform": "an `exec` op whose `platform` is not `linux/amd64`",
    "exec.extra_hosts": "an `exec` op with `extra_hosts`",
    "exec.shm_size": "an `exec` op with a `shm_size`",
    "exec.ulimits": "an `exec` op with `ulimits`",
    "exec.mount.bind": "an `exec` op with a `bind` mount other than `mounts[0]`",
    "exec.mount.cache": "an `exec` op with a `cache` mount",
    "exec.mount.tmpfs": "an `exec` op with a `tmpfs` mount",
    "exec.mount.secret": "an `exec` op with a `secret` mount",
    "exec.mount.ssh": "an `exec` op with an `ssh` mount",
    "file.copy": "a `file` op with a `copy` action",
    "file.mkfile": "a `file` op with a `mkfile` action",
    "file.mkdir": "a `file` op with a `mkdir` action",
    "file.rm": "a `file` op with an `rm` action",
    "file.symlink": "a `file` op with a `symlink` action",
    "merge": "a `merge` op",
    "diff": "a `diff` op",
    "image": "an `image` op",
}
KNOWN = frozenset(DESCRIPTIONS)


_SOURCES = tuple((k, f"source.{k}") for k in ("image", "local", "http", "git", "oci_layout", "scratch"))
_ACTIONS = tuple((k, f"file.{k}") for k in ("copy", "mkfile", "mkdir", "rm", "symlink"))
_MOUNTS = {t: f"exec.mount.{t}" for t in ("bind", "cache", "tmpfs", "secret", "ssh")}


def of_op(op: ops.Op) -> set[str]:
    """The features one op uses."""
    src = op.source
    if src is not None:
        return {name for k, name in _SOURCES if getattr(src, k) is not None}
    ex = op.exec
    if ex is not None:
        found = {"exec"}
        if ex.network != "default":
            found.add("exec.network")
        if ex.security == "insecure":
            found.add("exec.security.insecure")
        if ex.platform != ops.Platform():
            found.add("exec.platform")
        if ex.extra_hosts:
            found.add("exec.extra_hosts")
        if ex.shm_size:
            found.add("exec.shm_size")
        if ex.ulimits:
            found.add("exec.ulimits")
        for m in ex.mounts[1:]:
            found.add(_MOUNTS[m.type])
        return found
    f = op.file
    if f is not None:
        return {name for a in f.actions for k, name in _ACTIONS if getattr(a, k) is not None}
    return {op.kind}


def used_by(op_map: dict[str, ops.Op]) -> tuple[str, ...]:
    """Every feature the ops use, sorted: what a document's ``features`` must declare."""
    found: set[str] = set()
    for op in op_map.values():
        found |= of_op(op)
    return tuple(sorted(found))
