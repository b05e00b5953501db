"""Named features (BuildKit calls them capabilities) that a graph declares it uses.

A reader that meets a feature it does not know refuses the graph and names the feature, instead
of failing somewhere obscure.  Writers declare exactly the features their ops use: ``used_by``
computes that set, and validation checks the declaration against it.
"""

from __future__ import annotations

from ir import ops

KNOWN = frozenset({
    "source.image", "source.local", "source.http", "source.git", "source.oci_layout", "source.scratch",
    "exec", "exec.network", "exec.security.insecure",
    "exec.mount.bind", "exec.mount.cache", "exec.mount.tmpfs", "exec.mount.secret", "exec.mount.ssh",
    "file.copy", "file.mkfile", "file.mkdir", "file.rm", "file.symlink",
    "merge", "diff", "image",
})


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
