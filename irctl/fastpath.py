"""The no-op rebuild: answer "nothing changed" without compiling or solving.

A build's result is a pure function of its inputs: the build file, the context's files (after the
ignore file), named contexts, build arguments, the target, the base images as resolved before
(``resolved/`` in the cache store; ``--pull`` refreshes them and is never fast-pathed), and irctl's
own code.  After every successful build ``remember`` writes a memo under ``builds/`` keyed by a
digest of all of that; before the next one, ``try_build`` recomputes the key — stat-cached, so an
unchanged context is not read — and when the memo's layers are all still in the store, it is done.

It handles ``irctl build`` without the options that change how a build runs (``--no-cache``,
``--pull``, ``--frontend``, ``--push``, …).  With ``--output`` it answers only when the same
command line (outputs, tags, ``SOURCE_DATE_EPOCH``, working directory) exported this very build
before and every file it wrote is still there untouched (``backend.export.reuse``: the store's
record of what each destination holds, checked by ``lstat``): then there is nothing to write
either.  Anything else, and any miss, falls through to the ordinary path, which is always correct
on its own.  This module imports only what the no-op check itself uses (the frontends' bounded file
reader, the backend's context scanner): no typer, no frontend, no IR validator, no solver; what a miss
or an export needs is imported where used (``# lazy:``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

from backend.fileops.context import StatCache, scan_context
from backend.fs.safefs import private_dir
from frontends import Compiled
from frontends.errors import FrontendError
from frontends.files import read_context_file

MEMO_VERSION = b"irctl-build-memo-v1\0"
COMPILE_MEMO_VERSION = b"irctl-compile-memo-v1\0"
MAX_COMPILED = 256  # compiled graphs kept (the oldest go first)
_SCANS: dict[str, object] = {}  # context scans made by try_build in this process, for take_scans()
_PACKAGES = ("frontends", "ir", "backend", "irctl")
_VALUE_OPTIONS = {"-f": "file", "--file": "file", "-t": "tag", "--tag": "tag", "--target": "target",
                  "--build-arg": "build_arg", "--build-context": "build_context", "--secret": "secret",
                  "--ssh": "ssh", "--progress": "progress", "--cache-dir": "cache_dir", "--jobs": "jobs",
                  "-j": "jobs", "--insecure-registry": "insecure", "-o": "output", "--output": "output",
                  "--network": "network", "--platform": "platform"}
_LISTS = {"tag", "build_arg", "build_context", "secret", "ssh", "insecure", "output", "platform"}
MAX_EXPORT_REQUESTS = 8  # command lines remembered per build memo


def parse_argv(argv: list[str]) -> dict | None:
    """The options of a fast-pathable ``irctl build`` command line, or None."""
    opts: dict = {k: [] for k in _LISTS}
    positional: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        name, eq, value = a.partition("=") if a.startswith("--") else (a, "", "")
        if a == "--":
            positional += argv[i + 1:]
            break
        if name in _VALUE_OPTIONS:
            if not eq:
                i += 1
                if i >= len(argv):
                    return None
                value = argv[i]
            key = _VALUE_OPTIONS[name]
            if key in _LISTS:
                opts[key].append(value)
            elif key == "target" and opts.get(key):  # repeated: every target, as `irctl build` joins them
                opts[key] += "," + value
            else:
                opts[key] = value
        elif a.startswith("-"):
            return None  # an option the fast path does not handle (outputs, --no-cache, --pull, …)
        else:
            positional.append(a)
        i += 1
    if len(positional) > 1 or not _valid(opts):
        return None
    opts["context"] = positional[0] if positional else "."
    return opts


def _valid(opts: dict) -> bool:
    """False for a value the ordinary path refuses (it then says so): a no-op must not hide it."""
    if "jobs" in opts and not opts["jobs"].isdigit():  # (a negative count is refused too)
        return False
    if "progress" in opts:
        from irctl.progress import MODES  # lazy: only a command line that names a mode pays for it

        return opts["progress"] in MODES
    return True


def cache_root(explicit: str | None) -> Path:
    """Same order as ``backend.store.cache.default_root`` (kept in step by a test)."""
    if explicit:
        return Path(explicit)
    if os.environ.get("IRCTL_CACHE_DIR"):
        return Path(os.environ["IRCTL_CACHE_DIR"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "irctl"
    return Path.home() / ".cache" / "irctl"


@functools.lru_cache(maxsize=1)
def _code_fingerprint() -> bytes:
    """Every source file of irctl by path, size and mtime: a changed irctl never reuses a memo."""
    from importlib.util import find_spec

    h = hashlib.sha256()
    for pkg in _PACKAGES:
        spec = find_spec(pkg)  # locates the package without running its __init__
        for root in (spec.submodule_search_locations or []) if spec else []:
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
                for f in sorted(filenames):
                    if f.endswith((".py", ".lark", ".json")):
                        st = os.stat(os.path.join(dirpath, f))
                        h.update(f"{dirpath}/{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.digest()


def _tree_identity(root: Path, cache: Path, scans: dict | None = None) -> str:
    """The content identity of a directory (every file; stat-cached), via the backend's scanner.
    ``scans`` (realpath -> unfiltered ContextScan) holds what this build already scanned; new scans
    are added to it."""
    real = os.path.realpath(root)
    if scans is not None and real in scans:
        return scans[real].identity  # type: ignore[attr-defined]
    with StatCache(cache / "contexts.db") as stat_cache:
        found = scan_context(Path(real), stat_cache=stat_cache)
    if scans is not None:
        scans[real] = found
    return found.identity


def take_scans() -> dict:
    """The context scans ``try_build`` made in this process (then forgotten here): the build that
    follows a fast-path miss reuses them instead of walking (and on a cold cache hashing) the same
    context again, so one build sees one state of its context from start to memo."""
    scans = dict(_SCANS)
    _SCANS.clear()
    return scans


def _build_file(context: Path, file: str | None) -> Path | None:
    if file:
        return Path(file)
    for name in ("Dockerfile", "Containerfile", "irctl.toml", "build.py"):
        if (context / name).is_file():
            return context / name
    return None


def _syntax(data: bytes) -> bytes | None:
    """The ``# syntax=`` value as ``irctl.compiling._SYNTAX`` finds it (without importing ``re``)."""
    for line in data[:4096].split(b"\n\n", 1)[0].splitlines():
        rest = line.strip()
        if not rest.startswith(b"#"):
            continue
        rest = rest[1:].strip()
        if rest[:6].lower() == b"syntax" and rest[6:].lstrip().startswith(b"="):
            value = rest[6:].lstrip()[1:].split()
            if value:
                return value[0]
    return None


def build_key(opts: dict, cache: Path, scans: dict | None = None, *, with_context: bool = True) -> str | None:
    """Digest of every input of the build, or None when something cannot be keyed cheaply.
    ``with_context=False``: of every input of its *compile* (``compile_key``)."""
    context = Path(opts["context"])
    if opts.get("file") == "-":
        return None  # `-f -`: the build file came from stdin, gone once read
    build_file = _build_file(context, opts.get("file"))
    if build_file is None or not context.is_dir():
        return None
    if build_file.suffix == ".py":
        return None  # a program (pydsl): never keyed; the ordinary path decides if it may run, sandboxed
    try:  # the same bounded, confined reads as the compiler: an error is reported by the ordinary path
        data = read_context_file(build_file, context, "build file")
        ignores = [(ignore, read_context_file(ignore, context, "ignore file"))
                   for ignore in (build_file.with_name(build_file.name + ".dockerignore"), context / ".dockerignore")
                   if ignore.is_file()]
    except (FrontendError, OSError):
        return None
    syntax = _syntax(data)
    if syntax is not None and not syntax.startswith((b"docker/dockerfile", b"docker.io/docker/dockerfile")):
        return None  # `# syntax=` names another frontend: the ordinary path chooses (and may refuse) it
    h = hashlib.sha256(MEMO_VERSION if with_context else COMPILE_MEMO_VERSION)
    h.update(_code_fingerprint())
    h.update(f"file\0{build_file.resolve()}\0".encode())
    h.update(data)
    for ignore, text in ignores:
        h.update(f"ignore\0{ignore.resolve()}\0".encode() + text)
    if with_context:
        h.update(f"context\0{context.resolve()}\0{_tree_identity(context, cache, scans)}\n".encode())
    else:
        h.update(f"context\0{context.resolve()}\n".encode())  # its name appears in messages
    h.update(f"target\0{opts.get('target', '')}\n".encode())
    h.update(f"network\0{opts.get('network') or 'default'}\n".encode())  # keys a `default` step's result
    if any(opts.get("shape") or ()):  # --add-host, --shm-size, --ulimit, --label (none given: keys as before)
        h.update(b"shape\0" + json.dumps(opts["shape"], sort_keys=True).encode() + b"\n")
    # the host: a build without --platform (or with `local`) is for it, and a cache dir may be shared
    # with a host of another architecture (`uname -m`, as backend.oci.layout.Platform.host reads it)
    h.update(f"host\0{os.uname().machine}\n".encode())
    if opts.get("platform"):  # as typed (`irctl build` passes it so): normalising would import the frontends
        h.update(f"platform\0{','.join(opts['platform'])}\n".encode())
    for arg in sorted(opts["build_arg"]):
        name, eq, value = arg.partition("=")
        h.update(f"arg\0{name}\0{value if eq else os.environ.get(name, '')}\0{bool(eq or name in os.environ)}\n".encode())
    for spec in sorted(opts["build_context"]):
        name, _, value = spec.partition("=")
        h.update(f"named\0{spec}\n".encode())
        if value.startswith("oci-layout://"):
            path = value.removeprefix("oci-layout://").split("@")[0]
            head, _, tail = path.rpartition("/")
            path = f"{head}/{tail.split(':')[0]}" if head else tail.split(":")[0]
            index = Path(path) / "index.json"
            if not index.is_file():
                return None
            h.update(index.read_bytes())
        elif "://" not in value:
            if not Path(value).is_dir():
                return None
            if with_context:
                h.update(_tree_identity(Path(value), cache, scans).encode())
    h.update(" ".join(sorted(opts["insecure"])).encode())
    resolved = cache / "resolved"
    if resolved.is_dir():
        for memo in sorted(resolved.glob("*.json")):
            h.update(memo.name.encode() + memo.read_bytes())
    return h.hexdigest()


def try_build(argv: list[str]) -> int | None:
    """Exit status of a fast no-op build, or None to take the ordinary path."""
    opts = parse_argv(argv)
    if opts is None:
        return None
    try:
        cache = cache_root(opts.get("cache_dir"))
        key = build_key(opts, cache, _SCANS)
        if key is None:
            return None
        memo = json.loads((cache / "builds" / f"{key}.json").read_text())
    except (OSError, ValueError, ImportError):
        return None
    if not all(os.path.isdir(p) for p in memo.get("layers", [])) or _dead_session_left(cache):
        return None
    lines = _exported(opts, cache, memo) if opts["output"] else []
    if lines is None:
        return None
    _report(opts.get("progress", "auto"), memo)
    for line in lines:
        sys.stderr.write(line + "\n")
    if opts["tag"] and not opts["output"]:
        sys.stderr.write("note: no --output given; the result stays in the build cache "
                         "(use --output type=oci,dest=… or --push)\n")
    return 0


def _dead_session_left(cache: Path) -> bool:
    """Whether a killed build left its work dir, mounts or containers for the next solve to reap
    (``CacheStore.clean_stale``): that next build is then the ordinary one, so debris never
    outlives a build.  Its lock file is held while a build lives: one non-blocking try each."""
    import fcntl

    tmp = cache / "tmp"
    try:
        names = os.listdir(tmp)
    except OSError:
        return False
    for name in names:
        if not name.startswith("s-"):
            continue
        if name.endswith(".state") and name[: -len(".state")] + ".lock" not in names:
            return True  # a runtime dir its session could not remove
        if not name.endswith(".lock"):
            continue
        try:
            fd = os.open(tmp / name, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            continue
        finally:
            os.close(fd)
    return False


def export_request(opts: dict) -> str:
    """What decides an export besides the build: the ``--output`` values and tags as typed, the
    ``SOURCE_DATE_EPOCH`` they see, and the directory a relative ``dest`` is relative to."""
    data = json.dumps([opts.get("output", []), opts.get("tag", []), os.environ.get("SOURCE_DATE_EPOCH"),
                       os.getcwd()])
    return hashlib.sha256(data.encode()).hexdigest()


def _exported(opts: dict, cache: Path, memo: dict) -> list[str] | None:
    """The lines of the export this command line did after this build, if every file it wrote is
    still what it was; else None (the ordinary path exports)."""
    entries = (memo.get("exports") or {}).get(export_request(opts))
    if not isinstance(entries, list) or len(entries) != len(opts["output"]):
        return None
    from backend.export.reuse import ExportMemo  # lazy: only with --output (~18 ms)

    held = ExportMemo(cache)
    for e in entries:
        if not (isinstance(e, dict) and all(isinstance(e.get(k), str) for k in ("dest", "what", "line"))):
            return None
        if held.unchanged(e["dest"], e["what"]) is None:
            return None
    return [e["line"] for e in entries]


def _report(progress: str, memo: dict) -> None:
    steps = memo.get("steps", 0)
    text = f"build inputs unchanged: all {steps} steps cached"
    if progress == "json":
        sys.stderr.write(json.dumps({"kind": "cached", "op": "", "description": text, "group": "",
                                     "text": "", "duration": 0.0, "time": 0.0}) + "\n")
    elif progress != "quiet":
        sys.stderr.write(f"=> {text}\n")


def prescan(opts: dict, scans: dict) -> None:
    """Scan the build's contexts into ``scans`` as ``try_build`` would have (for builds that skip it,
    e.g. with ``--output``): the solver and ``remember`` then share that one scan."""
    try:
        build_key(opts, cache_root(opts.get("cache_dir")), scans)
    except (OSError, ValueError, ImportError):
        pass


def remember(opts: dict, layers: list[str], steps: int, scans: dict | None = None,
             keep_exports: bool = True) -> str | None:
    """Record a successful build for ``try_build``; never fails the build.  ``scans``: the context
    scans the build used (see ``take_scans``), so the memo is keyed by what was built.  Returns the
    memo's key (for ``remember_export``).  Exports recorded for the same layers are kept, unless
    ``keep_exports`` is False (``--no-cache``: the steps ran again, the image's times moved)."""
    try:
        cache = cache_root(opts.get("cache_dir"))
        key = build_key(opts, cache, scans)
        if key is None:
            return None
        memo = {"layers": layers, "steps": steps}
        old = _read_memo(cache, key)
        if keep_exports and old.get("layers") == layers and isinstance(old.get("exports"), dict):
            memo["exports"] = old["exports"]
        _write_memo(cache, key, memo)
        return key
    except (OSError, ValueError, ImportError):
        return None


def remember_export(cache_dir: str | None, key: str | None, opts: dict, exported: list[dict]) -> None:
    """Record, under build memo ``key``, what the command line ``opts`` (its ``output`` and ``tag``)
    exported: only when every output is a file the export memo vouches for (``dest``, ``what``)."""
    if key is None or not exported or not all("what" in e and "dest" in e for e in exported):
        return
    try:
        cache = cache_root(cache_dir)
        memo = _read_memo(cache, key)
        if "layers" not in memo:
            return
        exports = memo.get("exports") if isinstance(memo.get("exports"), dict) else {}
        request = export_request(opts)
        exports.pop(request, None)
        exports[request] = [{"dest": e["dest"], "what": e["what"], "line": e["line"]} for e in exported]
        memo["exports"] = dict(list(exports.items())[-MAX_EXPORT_REQUESTS:])
        _write_memo(cache, key, memo)
    except (OSError, ValueError, ImportError):
        pass


def _read_memo(cache: Path, key: str) -> dict:
    try:
        memo = json.loads((cache / "builds" / f"{key}.json").read_text())
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def _write_memo(cache: Path, key: str, memo: dict) -> None:
    target = cache / "builds" / f"{key}.json"
    private_dir(cache)
    private_dir(target.parent)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        json.dump(memo, f)
    os.replace(tmp, target)


# ------------------------------------------------------------------------- compiled graphs


def compile_key(opts: dict, cache: Path) -> str | None:
    """Digest of everything a Dockerfile/TOML compile reads — the build and ignore files, target,
    build args, named contexts' names (and OCI layouts' indexes), the base images' resolved
    digests (``resolved/``), irctl's own code — but not the context's files, which a compile
    never reads.  So editing a source file rebuilds without loading or running a frontend."""
    try:
        return build_key(opts, cache, with_context=False)
    except (OSError, ValueError, ImportError):
        return None


def compiled(cache: Path, key: str | None):
    """The ``frontends.Compiled`` remembered under ``key``, or None.  The graph is read back
    through the IR's validating loader, as any IR file is."""
    if key is None:
        return None
    try:
        data = (cache / "builds" / f"{key}.ir").read_bytes()
        warnings = json.loads((cache / "builds" / f"{key}.warnings").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        return None
    from ir.errors import IRError  # lazy: not on the no-op path
    from ir.validate import load_and_validate  # lazy: not on the no-op path (~60 ms)

    try:
        return Compiled(load_and_validate(data), tuple(warnings))
    except (IRError, ValueError):
        return None


def remember_compiled(cache: Path, key: str | None, result) -> None:
    """Keep ``result`` (a ``frontends.Compiled``) under ``key``; never fails the build."""
    if key is None:
        return
    from ir.codec import dump_document  # lazy: not on the no-op path (~35 ms)

    try:
        folder = cache / "builds"
        private_dir(cache)
        private_dir(folder)
        for suffix, data in ((".warnings", json.dumps(list(map(str, result.warnings))).encode()),
                             (".ir", dump_document(result.document))):  # the graph last: it marks the pair whole
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, folder / f"{key}{suffix}")
        graphs = [e for e in os.scandir(folder) if e.name.endswith(".ir")]
        if len(graphs) > MAX_COMPILED:
            for e in sorted(graphs, key=lambda e: e.stat().st_mtime_ns)[: len(graphs) - MAX_COMPILED]:
                for suffix in (".ir", ".warnings"):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(folder, e.name[: -len(".ir")] + suffix))
    except OSError:
        pass
