"""``irctl solve GRAPH.ir``: build the targets of an IR graph into the cache and print their results.

Grants (the only way a graph reaches the host): ``--local NAME=DIR``, ``--oci-layout NAME=PATH``,
``--secret``, ``--ssh``, ``--allow security.insecure``, ``--allow fs.read=PATH`` (git sources from local
repositories under PATH), ``--allow network.private`` (http/git sources on loopback, link-local or
private addresses).  Output: one JSON object per target with
its identity and layer dirs, on stdout; progress on stderr.  ``--output``/``-o`` (as for
``irctl build``) exports the first target, so an image from any generator can leave the cache.
``--cache-from``/``--cache-to`` mean what they mean for ``irctl build`` (``irctl.caching``); the graph
names the cache mounts ``mounts=*`` carries, and ``type=inline`` goes into the image ``-o`` writes.
``--remote-cache`` and ``--remote`` too (``irctl.remoting``).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import List, Optional

import typer

from backend.errors import BuildError
from irctl import caching, remoting
from irctl import options as cli_options
from irctl.errors import UserError, user_errors
from irctl.exporting import export, platform_of, precompress_needs
from irctl.rootless import enter_if_unprivileged
from irctl.terminal import printable


def _pairs(values: list[str], option: str) -> dict[str, Path]:
    out = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise UserError(f"{option} {v!r}: expected NAME=PATH")
        if not Path(path).exists():
            raise UserError(f"{option} {name}: {path} does not exist")
        out[name] = Path(path).resolve()
    return out


def _one_target(results: dict, wanted: list[str]) -> list:
    """The images ``export`` takes for the first target asked for: every platform of it (roots named
    ``NAME@os/arch``, ``ir.roots``) in the order asked, so a multi-platform graph exports its index."""
    from ir.roots import target_of  # lazy: with the validator

    first = target_of(wanted[0])
    return [(platform_of(results[n]), results[n]) for n in wanted if target_of(n) == first]


def solve_cmd(
    graph: Path = typer.Argument(..., help="IR graph file (irctl compile output)"),
    target: List[str] = typer.Option([], "--target", "-t", help="root to build (repeatable; default: `default`, "
                                     "else every root of the graph's one target, e.g. each platform)"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="cache store (default $IRCTL_CACHE_DIR, "
                                             "$XDG_CACHE_HOME/irctl, ~/.cache/irctl)"),
    local: List[str] = typer.Option([], "--local", help="grant a local directory: NAME=DIR"),
    oci_layout: List[str] = typer.Option([], "--oci-layout", help="grant an OCI layout: NAME=PATH"),
    secret: List[str] = typer.Option([], "--secret", help="id=ID,src=PATH or id=ID,env=VAR"),
    ssh: List[str] = typer.Option([], "--ssh", help="default or ID=SOCKET"),
    jobs: int = typer.Option(16, "--jobs", "-j", help="concurrent RUN steps"),
    no_cache: bool = typer.Option(False, "--no-cache", help="do not use cached results"),
    allow: List[str] = typer.Option([], "--allow", help="security.insecure, network.host, network.private, fs.read=PATH"),
    insecure_registry: List[str] = typer.Option([], "--insecure-registry", help="use plain HTTP for this registry"),
    progress: str = typer.Option("auto", "--progress", help="auto, tty, plain, json, quiet"),
    output: List[str] = typer.Option([], "-o", "--output", help="export the first target: type=oci|docker|registry|local|tar,…"),
    tags: List[str] = typer.Option([], "--tag", help="image name for oci/docker/registry outputs (repeatable)"),
    network: str = typer.Option("default", "--network", help="network of steps with network: default — default "
                                "(private, outbound only), none, or host (needs --allow network.host)"),
    explain: bool = typer.Option(False, "--explain", help="say why each step that ran missed the cache (compared "
                                 "with the last solve of the same graph file and targets)"),
    cache_from: List[str] = typer.Option([], "--cache-from", help="take results from a shared cache: "
                                         "type=registry,ref=REF | REF | type=local,src=DIR (repeatable)"),
    cache_to: List[str] = typer.Option([], "--cache-to", help="write a shared cache: type=registry,ref=REF | "
                                       "type=local,dest=DIR | type=inline (in the image -o writes), with "
                                       "mode=min|max, mounts=ID,… (repeatable)"),
    remote_cache: Optional[str] = typer.Option(None, "--remote-cache", help=remoting.REMOTE_CACHE_HELP),
    remote: Optional[str] = typer.Option(None, "--remote", help=remoting.REMOTE_HELP),
) -> None:
    """Solve GRAPH: run what its targets need (reusing the cache) and print their results."""
    with user_errors():
        enter_if_unprivileged(announce=progress != "quiet")
        # Below, `# lazy:` marks what `irctl --help` (which imports every command module) would pay
        # for at module level; and the backend is imported only inside the user namespace.
        from backend.solve.buildrecord import BuildRecord, target_name  # lazy: ~45 ms
        from backend.solve.solver import SolveOptions, solve  # lazy: ~110 ms
        from ir.limits import read_file  # lazy: with the validator
        from ir.roots import default_roots  # lazy: with the validator
        from ir.validate import load_and_validate  # lazy: ~60 ms

        if jobs < 1:
            raise UserError(f"--jobs {jobs}: expected a number of steps, at least 1")
        granted = cli_options.entitlements(allow)
        network = cli_options.network(network, granted)
        outputs = cli_options.outputs(output, stdout_taken_by="irctl solve's results")
        cache_imports, cache_exports = caching.imports(cache_from), caching.exports(cache_to)
        ledger = caching.ledger_for(cache_exports)
        farm = remoting.farm_options(remote_cache, caching.source_date_epoch(), remote)
        with open(graph, "rb") as f:
            doc = load_and_validate(read_file(f))
        try:
            from irctl.progress import renderer  # lazy: --help imports every command module

            render = renderer(progress)
        except ImportError:  # pragma: no cover - plain fallback
            import sys

            def render(e):
                sys.stderr.write(e.plain() + "\n")
        opts = SolveOptions(cache_dir=cache_dir, local_dirs=_pairs(local, "--local"),
                            oci_layouts=_pairs(oci_layout, "--oci-layout"), secrets=cli_options.secrets(secret),
                            ssh=cli_options.ssh_agents(ssh), jobs=jobs, no_cache=no_cache,
                            entitlements=granted, network=network,
                            insecure_registries=tuple(insecure_registry), on_event=render,
                            cache_from=cache_imports, ledger=ledger, farm=farm)
        try:
            wanted = target or default_roots(doc)
        except ValueError as e:
            raise UserError(f"{graph}: {e}") from None
        if outputs and len(wanted) == 1:  # (only the first target is exported)
            opts.precompress = precompress_needs(outputs)
        names = ",".join(wanted)
        opts.record = BuildRecord(target_name("solve", graph, names), f"{graph} (targets {names})")
        try:
            results = solve(doc, wanted, opts)
        except BuildError as e:
            claim = getattr(render, "claim", None)
            if claim:
                claim(e.op)  # reported once, by the error below
            raise
        finally:
            close = getattr(render, "close", None)
            if close:
                close()
            if explain:
                cli_options.print_explanation(opts.record, progress)
        emit = lambda line: typer.echo(printable(line), err=True)  # noqa: E731
        inline = ledger if any(c.type == "inline" for c in cache_exports) else None
        if outputs or cache_exports:
            from backend.store.cache import default_root  # lazy: only with --output or --cache-to

            root = default_root(cache_dir)
            if outputs:
                export(_one_target(results, wanted), outputs, tags, cache_root=root,
                       insecure=tuple(insecure_registry), emit=emit, inline=inline)
            if inline is not None:
                caching.warn_inline_without_image(outputs, emit)
            if cache_exports:  # mode=min: what every target needs
                needed = SimpleNamespace(layers=list(dict.fromkeys(p for r in results.values() for p in r.layers)))
                caching.export_caches(cache_exports, needed, ledger, doc, cache_root=root,
                                      insecure=tuple(insecure_registry), emit=emit)
    for name, snap in results.items():
        typer.echo(json.dumps({"target": name, "identity": snap.identity,
                               "layers": [str(p) for p in snap.layers],
                               "image": snap.image.config if snap.image else None}))


def register(app: typer.Typer) -> None:
    app.command("solve")(solve_cmd)
