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


def of_op(op: ops.Op) -> set[str]:
    if op.source is not None:
        (kind,) = [k for k in ("image", "local", "http", "git", "oci_layout", "scratch")
                   if getattr(op.source, k) is not None]
        return {f"source.{kind}"}
    if op.exec is not None:
        found = {"exec"}
        if op.exec.network != "default":
            found.add("exec.network")
        if op.exec.security == "insecure":
            found.add("exec.security.insecure")
        for m in op.exec.mounts[1:]:
            found.add(f"exec.mount.{m.type}")
        return found
    if op.file is not None:
        return {f"file.{k}" for a in op.file.actions
                for k in ("copy", "mkfile", "mkdir", "rm", "symlink") if getattr(a, k) is not None}
    return {op.kind}


def used_by(op_map: dict[str, ops.Op]) -> tuple[str, ...]:
    found: set[str] = set()
    for op in op_map.values():
        found |= of_op(op)
    return tuple(sorted(found))
