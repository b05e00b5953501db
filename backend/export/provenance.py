"""A SLSA provenance (v0.2, BuildKit's default predicate) of one image, from the IR that built it.

The shape is BuildKit's (docs.docker.com/build/metadata/attestations/slsa-definitions), so tools
that read buildx's provenance read ours: ``buildType`` BuildKit's, ``invocation.configSource`` the
build file's name and digest, ``invocation.parameters`` the frontend, target and local contexts
(``mode=max`` adds the build arguments and the ids of the secrets and SSH agents the steps mount),
``invocation.environment.platform``, and ``materials`` from the graph's sources: base images
(``pkg:docker/REF?platform=…`` with their pinned digest), http downloads with their checksum, git
checkouts, OCI layouts. ``mode=max`` adds ``buildConfig.steps``: every op the image depends on, in
build order, as its IR JSON form (``ir.jsonform``) — where BuildKit puts its LLB.

Only the IR and the invocation's names are read: a secret's value never reaches this module (the
IR holds secret ids only, by design, ``spec/ir.md``). Build argument values do, with ``mode=max``,
exactly as in BuildKit's (its docs warn the same way).
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass

from backend.export.imageset import docker_purl
from ir import ops
from ir.jsonform import to_json

PREDICATE_TYPE = "https://slsa.dev/provenance/v0.2"
BUILD_TYPE = "https://mobyproject.org/buildkit@v1"  # the parameters' shape is BuildKit's
MODES = ("min", "max")


@dataclass(frozen=True)
class Invocation:
    """What the build was asked, beside the graph (names only, never a secret's value)."""

    frontend: str
    target: str = ""
    build_args: tuple[tuple[str, str], ...] = ()
    invocation_id: str = ""
    started: str = ""  # RFC 3339; empty: left out (SOURCE_DATE_EPOCH builds stay reproducible)
    finished: str = ""


def predicate(doc: ops.Document, root: str, platform: str, invocation: Invocation, mode: str = "min") -> dict:
    """The provenance predicate of root ``root`` of ``doc`` built for ``platform``."""
    if mode not in MODES:
        raise ValueError(f"provenance mode {mode!r}: min or max")
    order = _build_order(doc, doc.roots[root].op)
    sources = [doc.ops[d].source for d in order if doc.ops[d].source is not None]
    params: dict = {"frontend": invocation.frontend}
    args = {"target": invocation.target} if invocation.target else {}
    if mode == "max":
        args.update({f"build-arg:{k}": v for k, v in invocation.build_args})
    if args:
        params["args"] = args
    locals_ = sorted({s.local.name for s in sources if s.local is not None})
    if locals_:
        params["locals"] = [{"name": n} for n in locals_]
    if mode == "max":
        secrets, ssh = _mounted(doc, order)
        if secrets:
            params["secrets"] = [{"id": i, "optional": not req} for i, req in sorted(secrets.items())]
        if ssh:
            params["ssh"] = [{"id": i, "optional": not req} for i, req in sorted(ssh.items())]
    config_source: dict = {}
    if doc.sources:
        # the file's name only: one outside the context is named by its host path (`-f /home/…`)
        config_source = {"entryPoint": posixpath.basename(doc.sources[0].name) or doc.sources[0].name,
                         "digest": {"sha256": hashlib.sha256(doc.sources[0].data).hexdigest()}}
    meta: dict = {"reproducible": False,
                  "completeness": {"parameters": mode == "max", "environment": True, "materials": False}}
    if invocation.invocation_id:
        meta["buildInvocationID"] = invocation.invocation_id
    if invocation.started:
        meta["buildStartedOn"] = invocation.started
    if invocation.finished:
        meta["buildFinishedOn"] = invocation.finished
    out: dict = {
        "builder": {"id": ""},
        "buildType": BUILD_TYPE,
        "materials": _materials(sources),
        "invocation": {"configSource": config_source, "parameters": params, "environment": {"platform": platform}},
        "metadata": meta,
    }
    if mode == "max":
        out["buildConfig"] = {"steps": _steps(doc, order)}
    return out


def _build_order(doc: ops.Document, top: str) -> list[str]:
    """The ops ``top`` depends on, itself last, each after its inputs (iterative: graphs are deep)."""
    order: list[str] = []
    seen: set[str] = set()
    stack: list[tuple[str, bool]] = [(top, False)]
    while stack:
        digest, expanded = stack.pop()
        if expanded:
            order.append(digest)
            continue
        if digest in seen:
            continue
        seen.add(digest)
        stack.append((digest, True))
        for ref in reversed(doc.ops[digest].inputs):
            if ref.op not in seen:
                stack.append((ref.op, False))
    return order


def _materials(sources: list[ops.SourceOp]) -> list[dict]:
    out: list[dict] = []
    for s in sources:
        if s.image is not None:
            plat = "/".join(p for p in (s.image.platform.os, s.image.platform.architecture, s.image.platform.variant)
                            if p)
            out.append(_material(docker_purl(s.image.ref, plat), s.image.digest))
        elif s.http is not None:
            out.append(_material(public_url(s.http.url), s.http.checksum))
        elif s.git is not None:
            commit = s.git.ref if re.fullmatch(r"[0-9a-f]{40}", s.git.ref) else ""
            uri = public_url(s.git.remote) + (f"#{s.git.ref}" if s.git.ref else "")
            out.append({"uri": uri, **({"digest": {"sha1": commit}} if commit else {})})
        elif s.oci_layout is not None:
            out.append(_material(f"oci-layout://{s.oci_layout.name}" + (f":{s.oci_layout.ref}" if s.oci_layout.ref
                                                                        else ""), s.oci_layout.digest))
    unique: dict[str, dict] = {}
    for m in out:
        unique.setdefault(repr(sorted(m.items())), m)
    return list(unique.values())


def public_url(url: str) -> str:
    """``url`` without the credentials its user info may carry (``https://TOKEN@host/…``,
    ``https://user:TOKEN@…``): a provenance is published with the image, as BuildKit's, which
    redacts them too.  An ssh URL keeps its user name (``ssh://git@host/…``: who, not a secret)."""
    m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)@", url)
    if m is None:
        return url
    user = m.group(2).split(":", 1)[0] if m.group(1).lower() == "ssh://" else ""
    return m.group(1) + (f"{user}@" if user else "") + url[m.end():]


def _material(uri: str, digest: str) -> dict:
    algo, _, value = digest.partition(":")
    return {"uri": uri, "digest": {algo: value}} if value else {"uri": uri}


def _mounted(doc: ops.Document, order: list[str]) -> tuple[dict[str, bool], dict[str, bool]]:
    """Ids of the secrets and SSH agents the steps mount, with whether one is required."""
    secrets: dict[str, bool] = {}
    ssh: dict[str, bool] = {}
    for d in order:
        ex = doc.ops[d].exec
        for m in ex.mounts if ex is not None else ():
            if m.secret is not None:
                secrets[m.secret.id] = secrets.get(m.secret.id, False) or m.secret.required
            if m.ssh is not None:
                ssh[m.ssh.id] = ssh.get(m.ssh.id, False) or m.ssh.required
    return secrets, ssh


def _steps(doc: ops.Document, order: list[str]) -> list[dict]:
    index = {d: i for i, d in enumerate(order)}
    steps = []
    for d in order:
        op = doc.ops[d]
        step: dict = {"id": f"step{index[d]}", "digest": d, "kind": op.kind,
                      "inputs": [f"step{index[r.op]}:{r.output}" for r in op.inputs]}
        meta = doc.metadata.get(d)
        if meta is not None and meta.description:
            step["description"] = meta.description
        step["op"] = to_json(getattr(op, op.kind))
        for kind, key in (("http", "url"), ("git", "remote")):  # the same URL, as `materials` names it
            if isinstance(step["op"].get(kind), dict) and key in step["op"][kind]:
                step["op"][kind][key] = public_url(step["op"][kind][key])
        steps.append(step)
    return steps
