"""``irctl build``: compile a build file with its frontend, solve the graph, export the result.

Flag spellings follow docker/buildx so existing scripts carry over.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from backend.errors import BuildError
from irctl import caching, debugging, metadata, remoting
from irctl import options as opt
from irctl.errors import UserError, user_errors
from irctl.exporting import export, precompress_needs
from irctl.loading import check_engine
from irctl.rootless import enter_if_unprivileged
from irctl.terminal import printable


@metadata.reporting
def build(
    context: Path = typer.Argument(Path("."), help="The build context directory."),
    file: Optional[Path] = typer.Option(None, "-f", "--file", help="Build file (default: CONTEXT/Dockerfile; "
                                        "-: read it from stdin)."),
    tags: List[str] = typer.Option([], "-t", "--tag", help="Name the image (repeatable)."),
    target: List[str] = typer.Option([], "--target", help="Stage to build (default: the last); repeatable: one "
                                     "solve for every target, their shared steps run once."),
    platform: List[str] = typer.Option([], "--platform", help="Target platform(s): os/arch or os/arch/variant, "
                                       "comma-separated, or local (repeatable; default: the host's)."),
    build_arg: List[str] = typer.Option([], "--build-arg", help="K=V build argument (repeatable)."),
    secret: List[str] = typer.Option([], "--secret", help="id=ID,src=PATH or id=ID,env=VAR (repeatable)."),
    ssh: List[str] = typer.Option([], "--ssh", help="default[=SOCKET] or ID=SOCKET (repeatable)."),
    build_context: List[str] = typer.Option([], "--build-context", help="NAME=DIR, NAME=docker-image://REF or "
                                         "NAME=oci-layout://PATH[:TAG] (repeatable)."),
    output: List[str] = typer.Option([], "-o", "--output", help="type=oci|docker|registry|local|tar "
                                  "with dest=… (- is stdout), or a DIR (repeatable)."),
    push: bool = typer.Option(False, "--push", help="Push the -t names (same as --output type=registry)."),
    load: bool = typer.Option(False, "--load", help="Load the image into Docker, else podman (same as --output "
                              "type=docker)."),
    frontend: str = typer.Option("", "--frontend", help="Frontend to use (see `irctl frontends`)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Run every step again."),
    no_cache_filter: List[str] = typer.Option([], "--no-cache-filter", help="Run the steps of these stages "
                                              "again (repeatable, or comma-separated)."),
    pull: bool = typer.Option(False, "--pull", help="Ask the registry for base images again (default: reuse); "
                              "--pull=true|false|always|missing|newer."),
    pull_policy: Optional[str] = typer.Option(None, "--pull-policy", hidden=True),  # --pull=VALUE (irctl.usage)
    jobs: int = typer.Option(0, "--jobs", "-j", help="Run at most N steps at once (default: no practical limit)."),
    progress: str = typer.Option("auto", "--progress", help="auto, tty, plain, json or quiet."),
    debug: bool = typer.Option(False, "--debug", help="Also show diagnostic detail (the snapshotter in use)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Cache store (default $IRCTL_CACHE_DIR, ~/.cache/irctl)."),
    insecure_registry: List[str] = typer.Option([], "--insecure-registry", help="Allow plain HTTP to this registry."),
    allow: List[str] = typer.Option([], "--allow", help="Grant an entitlement: security.insecure, network.host, network.private, fs.read=PATH."),
    ir_out: Optional[Path] = typer.Option(None, "--ir-out", help="Also write the compiled graph here."),
    network: str = typer.Option("default", "--network", help="Network of RUN steps: default (private, outbound "
                                "only), none, or host (needs --allow network.host)."),
    explain: bool = typer.Option(False, "--explain", help="Say why each step that ran missed the cache (compared "
                                 "with the last build of the same build file and target)."),
    cache_from: List[str] = typer.Option([], "--cache-from", help="Take results from a shared cache: "
                                         "type=registry,ref=REF | type=local,src=DIR | REF (repeatable)."),
    cache_to: List[str] = typer.Option([], "--cache-to", help="Write a shared cache: type=registry,ref=REF | "
                                       "type=local,dest=DIR | type=inline, with mode=min|max, mounts=ID,… (repeatable)."),
    remote_cache: Optional[str] = typer.Option(None, "--remote-cache", help=remoting.REMOTE_CACHE_HELP),
    remote: Optional[str] = typer.Option(None, "--remote", help=remoting.REMOTE_HELP),
    provenance: Optional[str] = typer.Option(None, "--provenance", help="Attach a SLSA provenance: true, false, "
                                             "mode=min|max (default: none)."),
    sbom: Optional[str] = typer.Option(None, "--sbom", help="Attach an SPDX SBOM read from the image's package "
                                       "databases (dpkg, apk, Python, npm): true or false (default: none)."),
    attest: List[str] = typer.Option([], "--attest", help="Attestation: type=provenance[,mode=min|max] or type=sbom "
                                     "(repeatable)."),
    annotation: List[str] = typer.Option([], "--annotation", help="Annotate the image: [TYPE[PLATFORM]:]KEY=VALUE, "
                                         "TYPE manifest (default), manifest-descriptor, index, index-descriptor."),
    iidfile: Optional[Path] = typer.Option(None, "--iidfile", help="Write the image ID to a file."),
    metadata_file: Optional[Path] = typer.Option(None, "--metadata-file", help="Write build result metadata "
                                                 "(buildx's JSON keys) to a file."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Print only the image ID on success, nothing else."),
    on_error: str = typer.Option("fail", "--on-error", help="When a RUN step fails: fail, or shell (an interactive "
                                 "shell in its container, as `buildx debug --on=error`; needs a terminal)."),
    debug_shell: str = typer.Option("/bin/sh", "--debug-shell", help="Command --on-error=shell runs "
                                    "(`irctl debug --invoke`)."),
    debug_secrets: bool = typer.Option(False, "--debug-secrets", help="Give the debug shell the step's secrets and "
                                       "ssh agents too (withheld by default)."),
    label: List[str] = typer.Option([], "--label", help="Set a label on the image: KEY=VALUE, over the build "
                                    "file's LABEL (repeatable)."),
    add_host: List[str] = typer.Option([], "--add-host", help="Add a line to every RUN's /etc/hosts: HOST:IP or "
                                       "HOST=IP (repeatable)."),
    shm_size: str = typer.Option("", "--shm-size", help="Size of /dev/shm in RUN steps, e.g. 128m, 1g (default 64m)."),
    ulimit: List[str] = typer.Option([], "--ulimit", help="Resource limit of RUN steps: NAME=SOFT[:HARD], e.g. "
                                     "nofile=1024:4096 (repeatable)."),
    check: bool = typer.Option(False, "--check", help="Run the build checks only, no build; exit 1 when any fires."),
) -> None:
    """Build an image from CONTEXT."""
    with user_errors():
        opt.check_context(context)
        shell = debugging.shell_options(on_error, debug_shell, debug_secrets)
        if jobs < 0:
            raise UserError(f"--jobs {jobs}: expected a number of steps, or 0 for no limit")
        from irctl import buildx_flags as bx  # lazy: imports the IR (~35 ms), which --help need not pay for

        shape = bx.request_options(add_host, shm_size, ulimit, label)
        pull = bx.pull(pull, pull_policy)
        enter_if_unprivileged(announce=progress != "quiet")
        if file is not None and str(file) == "-":
            shape["source"] = bx.stdin_build_file()
        # Below, `# lazy:` marks what `irctl --help` (which imports every command module) would pay
        # for at module level; and the backend is imported only inside the user namespace.
        from backend.solve.buildrecord import BuildRecord, target_name  # lazy: ~45 ms
        from irctl import fastpath  # lazy: the context scanner, ~30 ms
        from irctl.compiling import build_file  # lazy: the frontends and the image resolver, ~40 ms

        from irctl import platforms as plat  # lazy: as fastpath

        targets, wanted_platforms = plat.parse_targets(target), plat.parse(platform)
        memo_opts = {"context": str(context), "file": str(file) if file else None, "target": ",".join(targets),
                     "platform": platform,
                     "build_arg": build_arg, "build_context": build_context, "insecure": insecure_registry,
                     "cache_dir": str(cache_dir) if cache_dir else None, "network": network,
                     "shape": [add_host, shm_size, ulimit, label]}
        scans = fastpath.take_scans()  # what a fast-path miss just scanned: not walked again below
        if not scans and not frontend:  # no fast-path check ran (--output, ...): scan once here for all
            fastpath.prescan(memo_opts, scans)
        granted = opt.entitlements(allow)
        network = opt.network(network, granted)
        named = opt.named_contexts(build_context)
        outputs = opt.outputs(output, stdout_taken_by="-q's image ID" if quiet else None)
        from irctl import annotations, attesting  # lazy: the exporters' vocabulary (~3 ms)

        notes = annotations.parse(annotation)
        proven, sbom_on = attesting.attest_options(attest, provenance, sbom)
        if push:
            outputs.append(opt.Output("registry", {}))
        if load:  # buildx's shorthand; a docker output without dest loads (irctl.loading)
            outputs.append(opt.Output("docker", {}))
        check_engine(outputs, len(wanted_platforms))
        destinations = plat.outputs_by_target(outputs, tags, targets)
        cache_imports, cache_exports = caching.imports(cache_from), caching.exports(cache_to)
        ledger = caching.ledger_for(cache_exports)
        farm = remoting.farm_options(remote_cache, caching.source_date_epoch(), remote)
        compiled, root, wanted = _compile(context, file, frontend, targets, wanted_platforms, opt.build_args(build_arg),
                                          named, tuple(insecure_registry), cache_dir, pull,
                                          None if check else memo_opts, warn=not check, **shape)
        if check:  # buildx --check: the checks only, no solve
            from irctl.checking import report  # lazy: only --check

            raise typer.Exit(report(compiled, typer.echo))
        if ir_out is not None:
            from ir.codec import dump_document  # lazy: only with --ir-out (~35 ms)

            ir_out.write_bytes(dump_document(compiled.document))
        path = build_file(context, file)
        roots = ",".join(r.name for r in wanted)
        roots = "" if roots == "default" else roots  # the record key a default build always had
        record = BuildRecord(target_name("build", path, roots), f"{path}" + (f" ({roots})" if roots else ""))
        record.build_args = list(opt.build_args(build_arg))
        snapshots = _solve(compiled.document, [r.name for r in wanted], context, named, opt.secrets(secret),
                           opt.ssh_agents(ssh), jobs, no_cache, granted, tuple(insecure_registry), progress, root,
                           scans, network, record, explain, debug, precompress_needs(outputs), cache_imports, ledger,
                           _stage_filter(no_cache_filter, compiled.document), shell, farm)
        memo_key = None
        if not frontend:
            layers = [str(p) for p in plat.all_layers(snapshots).layers]
            memo_key = fastpath.remember(memo_opts, layers, len(compiled.document.ops),
                                         scans, keep_exports=not no_cache)
        emit = lambda line: typer.echo(printable(line), err=True)  # noqa: E731
        inline = ledger if any(c.type == "inline" for c in cache_exports) else None
        if outputs:
            exported = []
            for name, images in plat.images_by_target(wanted, snapshots):
                outs, named_as = destinations[name]
                said = proven and attesting.provenance_hook(proven, compiled.document, name or "default",
                                                            frontend=frontend, target=name,
                                                            build_args=opt.build_args(build_arg).items())
                listed = attesting.sbom_hook(named_as[0] if named_as else "image", emit) if sbom_on else None
                exported += export(images, outs, named_as, cache_root=root, insecure=tuple(insecure_registry),
                                   emit=emit, inline=inline, statements=attesting.chain(said, listed),
                                   annotations=notes)
            if not push and not cache_exports:
                fastpath.remember_export(memo_opts["cache_dir"], memo_key, {"output": output, "tag": tags}, exported)
        metadata.finish(exported if outputs else [], iidfile=iidfile, metadata_file=metadata_file, quiet=quiet)
        if not outputs and tags:
            typer.echo("note: no --output given; the result stays in the build cache "
                       "(use --output type=oci,dest=… or --push)", err=True)
        if inline is not None:
            caching.warn_inline_without_image(outputs, emit)
        if cache_exports:
            needed = plat.all_layers(snapshots)
            caching.export_caches(cache_exports, needed, ledger, compiled.document, cache_root=root,
                                  insecure=tuple(insecure_registry), emit=emit)


def _compile(context, file, frontend, targets, platforms, build_args, named, insecure, cache_dir, pull, memo_opts=None,
             warn=True, **shape):
    """Compile, or take the graph a compile of the same inputs left (``fastpath.compile_key``; not
    with ``--frontend`` or ``--pull``, whose answers may change with nothing local changing)."""
    from backend.store.cache import default_root  # lazy: --help imports every command module (~30 ms)
    from irctl import fastpath  # lazy: as in build()
    from irctl import platforms as plat  # lazy: as fastpath

    root = default_root(cache_dir)
    memo = memo_opts is not None and not frontend and not pull
    compiled = fastpath.compiled(root, fastpath.compile_key(memo_opts, root)) if memo else None
    if compiled is None:
        from irctl.compiling import CompileOptions  # lazy: a remembered graph needs no compile

        compiled, _ = plat.compile_all(CompileOptions(context=context, file=file, frontend=frontend,
                                                      build_args=build_args, named_contexts=named.frontend,
                                                      oci_layouts=named.oci_layouts, insecure_registries=insecure,
                                                      pull=pull, **shape), targets, platforms, root)
        if memo:  # keyed after the compile: it may have resolved (and remembered) a base image
            fastpath.remember_compiled(root, fastpath.compile_key(memo_opts, root), compiled)
    for warning in compiled.warnings if warn else ():
        typer.echo(printable(str(warning), newlines=True), err=True)
    return compiled, root, plat.roots(targets, platforms)


def _solve(doc, names, context, named, secrets, ssh, jobs, no_cache, granted, insecure, progress, root, scans,
           network, record, explain, debug=False, precompress=(), cache_from=(), ledger=None,
           no_cache_groups=frozenset(), shell=None, farm=None):
    from backend.solve.solver import SolveOptions, solve  # lazy: --help imports every command module (~110 ms)
    from irctl.progress import renderer  # lazy: as the solver (~5 ms)

    render = renderer(progress, debug=debug)
    options = SolveOptions(cache_dir=root, local_dirs={"context": context.resolve(), **named.local_dirs},
                           oci_layouts=named.oci_layouts, secrets=secrets, ssh=ssh, no_cache=no_cache,
                           entitlements=granted, insecure_registries=insecure, on_event=render,
                           context_scans=scans, network=network, record=record, precompress=precompress,
                           cache_from=cache_from, ledger=ledger, no_cache_groups=no_cache_groups, farm=farm)
    render = options.on_event = debugging.attach(options, shell, render)
    if jobs > 0:
        options.jobs = jobs
    t0 = time.monotonic()
    try:
        result = solve(doc, names, options)
    except BuildError as e:
        render.claim(e.op)  # its error report (after the build) says it once, with the Dockerfile excerpt
        raise
    finally:
        render.close()
        if explain:
            opt.print_explanation(options.record, progress)
    if progress != "quiet":
        print(f"built in {time.monotonic() - t0:.2f}s", file=sys.stderr)
    return result


def _stage_filter(values: list[str], doc) -> frozenset[str]:
    """``--no-cache-filter`` names as the groups the solver matches (a Dockerfile's stages); a name no
    step of the graph carries is a mistake worth stopping for, as a misspelt ``--target`` is."""
    names = frozenset(n.strip() for v in values for n in v.split(",") if n.strip())
    groups = {m.group for m in doc.metadata.values()}
    unknown = sorted(names - groups)
    if unknown:
        known = ", ".join(sorted(g for g in groups if g)) or "none"
        raise UserError(f"--no-cache-filter: no stage named {', '.join(map(repr, unknown))} (stages: {known})")
    return names


def register(app: typer.Typer) -> None:
    app.command("build")(build)
