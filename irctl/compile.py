"""``irctl compile``: a build file → an IR file, without building anything."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from irctl import options as opt
from irctl.errors import user_errors
from irctl.terminal import printable


def compile_cmd(
    context: Path = typer.Argument(Path("."), help="The build context directory."),
    file: Optional[Path] = typer.Option(None, "-f", "--file", help="Build file (default: CONTEXT/Dockerfile)."),
    out: Path = typer.Option(..., "-o", "--output", help="Where to write the graph ('-' for stdout)."),
    target: List[str] = typer.Option([], "--target", help="Stage to compile (default: the last); repeatable: "
                                     "one graph, a root per target."),
    platform: List[str] = typer.Option([], "--platform", help="Target platform(s): os/arch or os/arch/variant, "
                                       "comma-separated, or local (repeatable; default: the host's)."),
    build_arg: List[str] = typer.Option([], "--build-arg", help="K=V build argument (repeatable)."),
    build_context: List[str] = typer.Option([], "--build-context", help="NAME=DIR, NAME=docker-image://REF or "
                                         "NAME=oci-layout://PATH[:TAG] (repeatable)."),
    frontend: str = typer.Option("", "--frontend", help="Frontend to use (see `irctl frontends`)."),
    uncompressed: bool = typer.Option(False, "--uncompressed", help="Write plain msgpack (for debugging)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Cache store (for resolved image configs)."),
    insecure_registry: List[str] = typer.Option([], "--insecure-registry", help="Allow plain HTTP to this registry."),
    pull: bool = typer.Option(False, "--pull", help="Ask the registry for base images again (default: reuse); "
                              "also --pull=VALUE, as on build."),
    pull_policy: Optional[str] = typer.Option(None, "--pull-policy", hidden=True),  # --pull=VALUE (irctl.usage)
    label: List[str] = typer.Option([], "--label", help="Set a label on the image: KEY=VALUE (repeatable)."),
    add_host: List[str] = typer.Option([], "--add-host", help="HOST:IP line of every RUN's /etc/hosts (repeatable)."),
    shm_size: str = typer.Option("", "--shm-size", help="Size of /dev/shm in RUN steps, e.g. 128m (default 64m)."),
    ulimit: List[str] = typer.Option([], "--ulimit", help="NAME=SOFT[:HARD] limit of RUN steps (repeatable)."),
) -> None:
    """Compile a build file to the IR."""
    # Below, `# lazy:` marks what `irctl --help` (which imports every command module) would pay for.
    from backend.store.cache import default_root  # lazy: ~30 ms
    from ir.codec import dump_document  # lazy: ~35 ms
    from irctl import buildx_flags as bx  # lazy: the IR
    from irctl import platforms as plat  # lazy: the frontends, the image resolver
    from irctl.compiling import CompileOptions  # lazy: as platforms

    with user_errors():
        named = opt.named_contexts(build_context)
        compiled, _ = plat.compile_all(CompileOptions(
            context=context, file=file, frontend=frontend, build_args=opt.build_args(build_arg),
            named_contexts=named.frontend, oci_layouts=named.oci_layouts,
            insecure_registries=tuple(insecure_registry), pull=bx.pull(pull, pull_policy),
            **bx.request_options(add_host, shm_size, ulimit, label)),
            plat.parse_targets(target), plat.parse(platform), default_root(cache_dir))
        for warning in compiled.warnings:
            typer.echo(printable(str(warning), newlines=True), err=True)
        data = dump_document(compiled.document, compress=not uncompressed)
        if str(out) == "-":
            sys.stdout.buffer.write(data)
        else:
            out.write_bytes(data)
            doc = compiled.document
            typer.echo(printable(f"wrote {out}: {len(doc.ops)} ops, roots {', '.join(sorted(doc.roots))}"), err=True)


def register(app: typer.Typer) -> None:
    app.command("compile")(compile_cmd)
