"""Sources.  Two kinds:

* *resolved* sources (scratch, local, image, oci_layout) yield a snapshot without producing files:
  their identity comes from content (the scanned context, the manifest digest), their layers are
  materialised only when something reads them; a local context is a host dir, never copied up front.
* *fetched* sources (http, git) download into a new layer, like any other op with a cache key.

A graph reaches the host only through the grants in the solve options: a local or oci_layout source
naming something not granted is refused with the option to pass.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

from ir import ops as irops

from backend.errors import GrantError, SolveError
from backend.ops import EMPTY_IDENTITY, Step, Workspace
from backend.result import ImageMeta, Snapshot
from backend import safefs


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
        from backend.ops.file import scan

        root = Path(opts.local_dirs[src.local.name]).resolve()  # type: ignore[attr-defined]
        if not root.is_dir():
            raise GrantError(f"local directory {src.local.name!r}: {root} is not a directory")
        unfiltered = not src.local.include and not src.local.exclude
        found = opts.context_scans.get(str(root)) if unfiltered else None  # type: ignore[attr-defined]
        if found is None:
            found = scan(ws, root, src.local.include, src.local.exclude)
        else:
            ws.scans[found.identity] = found
        return Snapshot(identity=found.identity, host_dir=root, include=src.local.include, exclude=src.local.exclude)
    if src.image is not None:
        res = ws.images.resolve_registry(src.image.ref, src.image.digest, src.image.platform)  # type: ignore[attr-defined]
        return _image_snapshot(ws, res)
    if src.oci_layout is not None:
        o = src.oci_layout
        res = ws.images.resolve_layout(Path(opts.oci_layouts[o.name]), o.ref, o.digest, o.platform)  # type: ignore[attr-defined]
        return _image_snapshot(ws, res)
    raise AssertionError("fetched source passed to resolve_source")


def fetch_key_extra(src: irops.SourceOp) -> str | None:
    """What, beyond the op's bytes, a fetched source's cache key needs; None: never cached."""
    if src.http is not None:
        return "" if src.http.checksum else None
    g = src.git
    assert g is not None
    if re.fullmatch(r"[0-9a-f]{40}", g.ref or ""):
        return g.ref
    try:
        out = subprocess.run(["git", "ls-remote", g.remote, g.ref or "HEAD"], capture_output=True, text=True,
                             timeout=120, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise SolveError(f"git ls-remote {g.remote}: {getattr(e, 'stderr', '') or e}") from None
    lines = [line.split()[0] for line in out.splitlines() if line.strip()]
    if not lines:
        raise SolveError(f"git {g.remote}: no ref {g.ref or 'HEAD'!r}")
    return lines[0]


def fetch_source(ws: Workspace, step: Step, src: irops.SourceOp) -> Snapshot:
    work = ws.temp_dir("fetch-")
    layer = work / "layer"
    layer.mkdir()
    if src.http is not None:
        _http(src.http, layer, step)
    else:
        _git(src.git, layer, work, step)  # type: ignore[arg-type]
    lid = ws.commit(layer)
    safefs.rmtree(work, ignore_errors=True)
    return ws.snapshot([lid] if lid else [])


def _http(h: irops.HTTPSource, layer: Path, step: Step) -> None:
    from backend.registry import httpx, import_httpcore

    import_httpcore()

    name = h.filename or (h.url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "index.html")
    dest = layer / name
    digest = hashlib.sha256()
    try:
        with httpx.stream("GET", h.url, follow_redirects=True, timeout=60) as resp:
            if resp.status_code != 200:
                raise SolveError(f"GET {h.url}: HTTP {resp.status_code}")
            with open(dest, "wb") as f:
                for chunk in resp.iter_bytes(1 << 20):
                    digest.update(chunk)
                    f.write(chunk)
    except httpx.HTTPError as e:
        raise SolveError(f"GET {h.url}: {e}") from None
    got = "sha256:" + digest.hexdigest()
    if h.checksum and got != h.checksum:
        raise SolveError(f"GET {h.url}: content is {got}, expected checksum {h.checksum}")
    os.chmod(dest, h.mode)
    os.utime(dest, (0, 0))
    step.info(f"downloaded {h.url} ({dest.stat().st_size} bytes, {got})")


def _git(g: irops.GitSource, layer: Path, work: Path, step: Step) -> None:
    checkout = work / "checkout"
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}

    def git(*args: str, cwd: Path | None = None) -> None:
        r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
        if r.returncode != 0:
            raise SolveError(f"git {' '.join(args)}: {r.stderr.strip()[-2000:]}")

    git("init", "-q", str(checkout))
    git("remote", "add", "origin", g.remote, cwd=checkout)
    git("fetch", "-q", "--depth", "1", "origin", g.ref or "HEAD", cwd=checkout)
    git("-c", "advice.detachedHead=false", "checkout", "-q", "FETCH_HEAD", cwd=checkout)
    if not g.keep_git_dir:
        safefs.rmtree(checkout / ".git")
    src = checkout / g.subdir if g.subdir else checkout
    if not src.is_dir():
        raise SolveError(f"git {g.remote}: no directory {g.subdir!r} in the checkout")
    for entry in os.listdir(src):
        os.rename(src / entry, layer / entry)
