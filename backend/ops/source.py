"""Sources.  Two kinds:

* *resolved* sources (scratch, local, image, oci_layout) yield a snapshot without producing files:
  their identity comes from content (the scanned context, the manifest digest), their layers are
  materialised only when something reads them; a local context is a host dir, never copied up front.
* *fetched* sources (http, git) download into a new layer, like any other op with a cache key.

A graph reaches the host only through the grants in the solve options: a local or oci_layout source
naming something not granted is refused with the option to pass, and so is a git source that
reads a host repository (``--allow fs.read=``) or an http/git source whose host is a literal private
address (``--allow network.private``; names are resolved and checked when fetched).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from ir import ops as irops

from backend.errors import GrantError
from backend.fs import safefs
from backend.ops import git, http
from backend.ops.handler import OpHandler
from backend.ops.netcheck import GRANT, literal_refusal
from backend.ops.workspace import EMPTY_IDENTITY, Step, Workspace
from backend.result import ImageMeta, Snapshot


class SourceHandler(OpHandler):
    kind = "source"

    def grant_problems(self, options, where: str) -> list[str]:
        assert self.op.source is not None
        try:
            check_grants(self.op.source, options, where)
        except GrantError as e:
            return [str(e)]
        return []

    def resolve(self, ws: Workspace, step: Step) -> Snapshot | None:
        assert self.op.source is not None
        return None if is_fetched(self.op.source) else resolve_source(ws, step, self.op.source)

    def key_extra(self, options) -> str | None:
        assert self.op.source is not None
        return fetch_key_extra(self.op.source, options)

    def run(self, ws: Workspace, step: Step, inputs: list[Snapshot]) -> list[Snapshot]:
        assert self.op.source is not None
        return [fetch_source(ws, step, self.op.source)]


def is_fetched(src: irops.SourceOp) -> bool:
    return src.http is not None or src.git is not None


def check_grants(src: irops.SourceOp, options, where: str) -> None:
    if src.local is not None and src.local.name not in options.local_dirs:
        raise GrantError(f"{where}: the graph reads the local directory {src.local.name!r}, which was not granted; "
                         f"pass --local {src.local.name}=DIR (or --build-context {src.local.name}=DIR)")
    if src.oci_layout is not None and src.oci_layout.name not in options.oci_layouts:
        n = src.oci_layout.name
        raise GrantError(f"{where}: the graph reads the OCI layout {n!r}, which was not granted; "
                         f"pass --oci-layout {n}=PATH (or --build-context {n}=oci-layout://PATH)")
    if src.git is not None:
        git.check_grants(src.git, options.entitlements, where)
    if src.http is not None and not options.entitlements.network_private:
        try:
            host = urlsplit(src.http.url).hostname or ""
        except ValueError:
            host = ""
        why = literal_refusal(host)
        if why:
            raise GrantError(f"{where}: GET {src.http.url}: {host} is {why}; the host's own or private networks "
                             f"are reachable only when granted; pass {GRANT}")


def _image_snapshot(ws: Workspace, res) -> Snapshot:
    cfg = res.config
    meta = ImageMeta(config=dict(cfg.get("config") or {}), history=tuple(cfg.get("history") or ()),
                     platform={k: cfg[k] for k in ("os", "architecture", "variant") if cfg.get(k)})
    return Snapshot(identity=res.manifest_digest, layers=tuple(ws.store.layer_path(l.diff_id) for l in res.layers),
                    image=meta)


def resolve_source(ws: Workspace, step: Step, src: irops.SourceOp) -> Snapshot:
    """The snapshot of a resolved source (not http/git)."""
    opts = ws.options
    if src.scratch is not None:
        return Snapshot(identity=EMPTY_IDENTITY)
    if src.local is not None:
        root = Path(opts.local_dirs[src.local.name]).resolve()  # type: ignore[attr-defined]
        if not root.is_dir():
            raise GrantError(f"local directory {src.local.name!r}: {root} is not a directory")
        unfiltered = not src.local.include and not src.local.exclude
        found = opts.context_scans.get(str(root)) if unfiltered else None  # type: ignore[attr-defined]
        if found is None:
            found = ws.scan(root, src.local.include, src.local.exclude)
        else:
            ws.scans[found.identity] = found
        return Snapshot(identity=found.identity, host_dir=root, include=src.local.include, exclude=src.local.exclude)
    if src.image is not None:
        res = ws.images.resolve_registry(src.image.ref, src.image.digest, src.image.platform,  # type: ignore[attr-defined]
                                         (step.digest, step.description, step.group))
        return _image_snapshot(ws, res)
    if src.oci_layout is not None:
        o = src.oci_layout
        res = ws.images.resolve_layout(Path(opts.oci_layouts[o.name]), o.ref, o.digest, o.platform,  # type: ignore[attr-defined]
                                       (step.digest, step.description, step.group))
        return _image_snapshot(ws, res)
    raise AssertionError("fetched source passed to resolve_source")


def fetch_key_extra(src: irops.SourceOp, options) -> str | None:
    """What, beyond the op's bytes, a fetched source's cache key needs; None: never cached."""
    if src.http is not None:
        return "" if src.http.checksum else None
    return git.fetch_key_extra(src.git, options.entitlements, options.ssh.get("default"))  # type: ignore[arg-type]


def fetch_source(ws: Workspace, step: Step, src: irops.SourceOp) -> Snapshot:
    work = ws.temp_dir("fetch-")
    layer = work / "layer"
    layer.mkdir()
    granted = ws.options.entitlements  # type: ignore[attr-defined]
    if src.http is not None:
        http.fetch(src.http, layer, step, granted.network_private)
    else:
        git.fetch(src.git, layer, work, granted, ws.options.ssh.get("default"))  # type: ignore[arg-type,attr-defined]
    lid = ws.commit(layer)
    safefs.rmtree(work, ignore_errors=True)
    return ws.snapshot([lid] if lid else [])
