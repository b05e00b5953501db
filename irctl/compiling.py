"""From a build file on disk to an IR document: pick the frontend, read the context's ignore
file, resolve base images, compile.  Shared by ``irctl compile`` and ``irctl build``."""

from __future__ import annotations

import importlib
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from frontends import BuildRequest, FrontendError, available, executes_code, for_file
from frontends.dockerfile.dockerignore import find_ignore_file, read_patterns
from frontends.files import FileError, read_context_file, read_ignore_file
from ir import ops
from irctl.errors import UserError
from irctl.resolver import Resolver

_SYNTAX = re.compile(rb"^\s*#\s*syntax\s*=\s*(\S+)", re.IGNORECASE | re.MULTILINE)
# `# syntax=` values that mean "the Dockerfile language": BuildKit's frontend images.
_DOCKERFILE_SYNTAXES = re.compile(r"^(docker\.io/)?(docker/dockerfile(-upstream)?)(:.*)?(@.*)?$")


@dataclass
class CompileOptions:
    context: Path
    file: Path | None = None
    frontend: str = ""
    target: str = ""
    build_args: dict[str, str] = field(default_factory=dict)
    named_contexts: dict = field(default_factory=dict)  # name -> frontends.NamedContext
    oci_layouts: dict[str, Path] = field(default_factory=dict)
    insecure_registries: tuple[str, ...] = ()
    pull: bool = False  # ask the registry again even for images resolved before
    source: bytes | None = None  # the build file's bytes when they came from stdin (`-f -`)
    extra_hosts: tuple = ()  # frontends.BuildRequest's, for every RUN (`--add-host`, `--shm-size`, `--ulimit`)
    shm_size: int = 0
    ulimits: tuple = ()
    labels: dict[str, str] = field(default_factory=dict)  # `--label`
    platform: ops.Platform = field(default_factory=ops.Platform)  # the target platform (TARGETPLATFORM)
    build_platform: ops.Platform = field(default_factory=ops.Platform)  # the host's (BUILDPLATFORM)


def build_file(context: Path, file: Path | None) -> Path:
    if file is not None:
        return file
    for name in ("Dockerfile", "Containerfile", "irctl.toml", "build.py"):
        if (context / name).is_file():
            return context / name
    raise UserError(f"no build file in {context} (looked for Dockerfile, Containerfile, irctl.toml, build.py); use -f")


def _entry_point_specs(group: str) -> dict[str, str] | None:
    """``name -> "module:attr"`` of the entry points in ``group``, read straight from the
    ``*.dist-info``/``*.egg-info`` dirs on ``sys.path`` the way ``importlib.metadata`` finds them
    (path order, the first distribution of a name wins, a later entry point of the same name
    replaces an earlier one, as ``frontends.available`` does).  Importing ``importlib.metadata``
    and parsing every distribution's metadata costs ~40 ms per build; this reads a few small
    files.  None when the path holds something only ``importlib.metadata`` understands (a zip)."""
    specs: dict[str, str] = {}
    seen: set[str] = set()
    for entry in sys.path:
        root = entry or "."
        if not os.path.isdir(root):
            if os.path.exists(root):
                return None  # a zip or egg file on the path
            continue
        try:
            names = sorted(n for n in os.listdir(root) if n.endswith((".dist-info", ".egg-info")))
        except OSError:
            continue
        for name in names:
            dist = re.sub(r"[-_.]+", "_", name.rsplit(".", 1)[0].split("-")[0]).lower()
            if dist in seen:
                continue
            seen.add(dist)
            try:
                text = Path(root, name, "entry_points.txt").read_text(encoding="utf-8")
            except FileNotFoundError:
                continue
            except (OSError, UnicodeDecodeError):
                return None
            section = None
            for line in text.splitlines():
                line = line.strip()
                if not line or line.startswith(("#", ";")):
                    continue
                if line.startswith("[") and line.endswith("]"):
                    section = line[1:-1].strip()
                elif section == group:
                    key, eq, value = line.partition("=")
                    if not eq:
                        return None
                    specs[key.strip()] = value.strip()
    return specs


def _installed_frontends() -> dict:
    """``frontends.available()``'s mapping (the distribution named only as "?"), without
    importlib.metadata when the entry points can be read directly (``_entry_point_specs``)."""
    specs = _entry_point_specs("irctl.frontends")
    if specs is None:
        return available()
    found = {}
    for name, spec in specs.items():
        module, _, attr = spec.partition(":")
        try:
            obj = importlib.import_module(module.strip())
            for part in attr.split("[", 1)[0].strip().split(".") if attr else ():
                obj = getattr(obj, part)
        except Exception as e:  # a broken plugin must not take the CLI down (as in available())
            raise FrontendError(f"frontend {name!r} from {spec} failed to load: {e}") from None
        found[name] = (obj, "?")
    return found


def choose_frontend(path: Path, data: bytes, requested: str, explicit: bool = False):
    """``--frontend``, then a ``# syntax=`` directive, then the file name or suffix.

    A frontend that executes its build files (``frontends.executes_code``) is chosen only by
    ``--frontend`` or, when ``explicit`` (the user passed ``-f``), by the name of that file: never by
    a ``# syntax=`` line or a file that merely sits in the context — both come from the untrusted
    side."""
    try:
        found = _installed_frontends()
    except FrontendError as e:
        raise UserError(str(e)) from None
    names = ", ".join(sorted(found)) or "none"
    if requested:
        if requested not in found:
            raise UserError(f"unknown frontend {requested!r} (installed: {names})")
        return found[requested][0]
    m = _SYNTAX.search(data[:4096].split(b"\n\n", 1)[0])
    if m:
        syntax = m.group(1).decode(errors="replace")
        if _DOCKERFILE_SYNTAXES.match(syntax) and "dockerfile" in found:
            return found["dockerfile"][0]
        if syntax in found:
            if executes_code(found[syntax][0]):
                line = data[:m.start(1)].count(b"\n") + 1
                raise UserError(f"{path}:{line}: '# syntax={syntax}' names a frontend that executes the build file "
                                f"as a program; a syntax line may never select it (pass --frontend {syntax} "
                                "to run this file deliberately, sandboxed)")
            return found[syntax][0]
    frontend = for_file(path.name, found)
    if frontend is None:
        raise UserError(f"{path}: no frontend claims this file (installed: {names}); use --frontend")
    if executes_code(frontend) and not explicit:
        raise UserError(f"{path}: found in the context, but the {frontend.name!r} frontend executes its build file as "
                        f"a program and is never chosen automatically; pass -f {path} or --frontend "
                        f"{frontend.name} to run it (sandboxed)")
    return frontend


def compile_file(opts: CompileOptions, cache_root: Path):
    """Compile the build file; returns ``frontends.Compiled``."""
    path = build_file(opts.context, opts.file) if opts.source is None else Path("Dockerfile")
    try:
        # bounded, and confined to the context when inside it (``frontends.files``)
        data = read_context_file(path, opts.context, "build file") if opts.source is None else opts.source
        ignore = find_ignore_file(opts.context, path if opts.file is not None and opts.source is None else None)
        patterns = tuple(read_patterns(read_ignore_file(ignore, opts.context))) if ignore is not None else ()
    except FileError as e:
        raise UserError(str(e)) from None
    frontend = choose_frontend(path, data, opts.frontend, explicit=opts.file is not None and opts.source is None)
    request = BuildRequest(source=data, filename=str(path.name if path.parent == opts.context else path),
                           target=opts.target, build_args=opts.build_args, contexts=opts.named_contexts,
                           ignore_patterns=patterns, platform=opts.platform, build_platform=opts.build_platform,
                           extra_hosts=opts.extra_hosts, shm_size=opts.shm_size, ulimits=opts.ulimits,
                           labels=opts.labels)
    resolver = Resolver(cache_root, opts.oci_layouts, opts.insecure_registries, opts.pull)
    try:
        return frontend.compile(request, resolver)
    except FrontendError as e:
        raise UserError(str(e)) from None
    finally:
        resolver.close()
