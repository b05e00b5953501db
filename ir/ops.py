"""The IR v1 node types: the single definition of the build graph.

Every class here is a frozen dataclass whose fields *are* the wire format: the field name is the
msgpack key, the Python default is the spec default (and is omitted on the wire), and the
``doc`` metadata is the text the spec and the JSON Schema use.  The codec (``ir/wire.py``) and the
schema (``ir/schema.py``) are derived from these classes, so the format is defined exactly once.

A class listed in ``ONE_OF`` is a tagged union: exactly one of its fields is set.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

SORTED = "sorted"  # field metadata flag: an order-insensitive list, stored sorted


def doc(text: str, **extra) -> dict:
    return {"doc": text, **extra}


class FrozenMap(dict):
    """A read-only, hashable ``dict`` for map-valued fields of frozen ops (``ImageConfig.labels``),
    so an op stays immutable — its cached digest cannot go stale — and hashable.  It is a ``dict``
    subclass: it compares equal to a plain dict with the same items and encodes the same way."""

    __slots__ = ()

    def _readonly(self, *args, **kwargs):
        raise TypeError("an IR op's map is read-only; build a new op (dataclasses.replace)")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly  # type: ignore[assignment]
    __ior__ = _readonly  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))

    def __reduce__(self):
        return (FrozenMap, (dict(self),))

    def __repr__(self) -> str:
        return dict.__repr__(self)


# --------------------------------------------------------------------------- edges and shared


@dataclass(frozen=True, slots=True)
class Ref:
    """An edge: output ``output`` of the op whose digest is ``op``."""

    op: str = field(metadata=doc("Digest of the producing op, `sha256:` + 64 lowercase hex digits."))
    output: int = field(default=0, metadata=doc("Output index of that op."))


@dataclass(frozen=True, slots=True)
class Platform:
    os: str = field(default="linux", metadata=doc("GOOS-style operating system."))
    architecture: str = field(default="amd64", metadata=doc("GOARCH-style architecture."))
    variant: str = field(default="", metadata=doc("CPU variant, e.g. `v8` for arm64."))


@dataclass(frozen=True, slots=True)
class Owner:
    """A user and group, each a name (resolved in the destination's /etc/passwd, /etc/group) or an id."""

    user: str = field(default="", metadata=doc("User name or numeric id; empty means 0."))
    group: str = field(default="", metadata=doc("Group name or numeric id; empty means the user's primary group, or 0."))


# --------------------------------------------------------------------------- source


@dataclass(frozen=True, slots=True)
class ImageSource:
    ref: str = field(metadata=doc("Fully qualified reference, e.g. `127.0.0.1:5000/busybox:latest`."))
    digest: str = field(default="", metadata=doc("Manifest digest pinning the image; empty: resolve `ref` when solving."))
    platform: Platform = field(default_factory=Platform, metadata=doc("Platform to select from an index."))


@dataclass(frozen=True, slots=True)
class LocalSource:
    name: str = field(metadata=doc("Name of a local directory granted by the user when solving (e.g. `context`)."))
    include: tuple[str, ...] = field(default=(), metadata=doc("Only these patterns (dockerignore syntax); empty: all."))
    exclude: tuple[str, ...] = field(default=(), metadata=doc("Excluded patterns in order, dockerignore syntax, `!` re-includes."))


@dataclass(frozen=True, slots=True)
class HTTPSource:
    url: str = field(metadata=doc("`http://` or `https://` URL."))
    checksum: str = field(default="", metadata=doc("Expected `sha256:` digest of the body; a mismatch fails the op."))
    filename: str = field(default="", metadata=doc("File name in the output; default: last URL path segment."))
    mode: int = field(default=0o644, metadata=doc("Permission bits of the file."))


@dataclass(frozen=True, slots=True)
class GitSource:
    remote: str = field(metadata=doc("Repository URL as the git CLI accepts it."))
    ref: str = field(default="", metadata=doc("Branch, tag or commit; empty: the remote's HEAD."))
    keep_git_dir: bool = field(default=False, metadata=doc("Keep the `.git` directory in the output."))
    subdir: str = field(default="", metadata=doc("Only this sub-directory of the checkout."))


@dataclass(frozen=True, slots=True)
class OCILayoutSource:
    name: str = field(metadata=doc("Name of an OCI image layout granted by the user when solving."))
    ref: str = field(default="", metadata=doc("Tag (`org.opencontainers.image.ref.name`) inside the layout."))
    digest: str = field(default="", metadata=doc("Manifest digest inside the layout; wins over `ref`."))
    platform: Platform = field(default_factory=Platform, metadata=doc("Platform to select from an index."))


@dataclass(frozen=True, slots=True)
class ScratchSource:
    """An empty filesystem."""


@dataclass(frozen=True, slots=True)
class SourceOp:
    image: ImageSource | None = field(default=None, metadata=doc("A registry image's root filesystem."))
    local: LocalSource | None = field(default=None, metadata=doc("Files of a local directory."))
    http: HTTPSource | None = field(default=None, metadata=doc("One file downloaded over HTTP(S)."))
    git: GitSource | None = field(default=None, metadata=doc("A git checkout."))
    oci_layout: OCILayoutSource | None = field(default=None, metadata=doc("An image from an OCI layout on disk."))
    scratch: ScratchSource | None = field(default=None, metadata=doc("Nothing at all."))


# --------------------------------------------------------------------------- exec


@dataclass(frozen=True, slots=True)
class CacheOptions:
    id: str = field(metadata=doc("Cache identity; mounts with the same id share one persistent directory."))
    sharing: Literal["shared", "private", "locked"] = field(
        default="shared", metadata=doc("`shared`: concurrent users share it; `private`: each concurrent user gets its own; `locked`: one at a time."))
    uid: int = field(default=0, metadata=doc("Owner of the directory when first created."))
    gid: int = field(default=0, metadata=doc("Group of the directory when first created."))
    mode: int = field(default=0o755, metadata=doc("Mode of the directory when first created."))


@dataclass(frozen=True, slots=True)
class TmpfsOptions:
    size: int = field(default=0, metadata=doc("Size limit in bytes; 0: the runtime's default."))


@dataclass(frozen=True, slots=True)
class SecretOptions:
    id: str = field(metadata=doc("Secret id; the value is supplied by the user when solving, never stored in the IR."))
    env: str = field(default="", metadata=doc("Expose the value in this environment variable instead of a file."))
    uid: int = field(default=0, metadata=doc("Owner of the secret file."))
    gid: int = field(default=0, metadata=doc("Group of the secret file."))
    mode: int = field(default=0o400, metadata=doc("Mode of the secret file."))
    required: bool = field(default=False, metadata=doc("Fail when the secret is not supplied (else the mount is skipped)."))


@dataclass(frozen=True, slots=True)
class SSHOptions:
    id: str = field(default="default", metadata=doc("SSH agent id granted with `--ssh ID=…`."))
    uid: int = field(default=0, metadata=doc("Owner of the socket."))
    gid: int = field(default=0, metadata=doc("Group of the socket."))
    mode: int = field(default=0o600, metadata=doc("Mode of the socket."))
    required: bool = field(default=False, metadata=doc("Fail when no agent is supplied."))


@dataclass(frozen=True, slots=True)
class Mount:
    target: str = field(metadata=doc("Absolute path inside the container; mounts[0] MUST be `/`."))
    type: Literal["bind", "cache", "tmpfs", "secret", "ssh"] = field(default="bind", metadata=doc("Mount type."))
    input: int = field(default=-1, metadata=doc("Index into the op's `inputs` mounted here (bind), or seeding it (cache); -1: none (empty)."))
    selector: str = field(default="", metadata=doc("Sub-path of the input to mount instead of its root."))
    readonly: bool = field(default=False, metadata=doc("Mount read-only."))
    output: int = field(default=-1, metadata=doc("Output index receiving this mount's final contents; -1: discarded."))
    cache: CacheOptions | None = field(default=None, metadata=doc("Required for, and only for, `type: cache`."))
    tmpfs: TmpfsOptions | None = field(default=None, metadata=doc("Options for `type: tmpfs`."))
    secret: SecretOptions | None = field(default=None, metadata=doc("Required for, and only for, `type: secret`."))
    ssh: SSHOptions | None = field(default=None, metadata=doc("Options for `type: ssh`."))


@dataclass(frozen=True, slots=True)
class ExecOp:
    args: tuple[str, ...] = field(metadata=doc("argv; args[0] is looked up in PATH of `env`."))
    mounts: tuple[Mount, ...] = field(metadata=doc("Mounts; the first is the root filesystem at `/`."))
    env: tuple[str, ...] = field(default=(), metadata=doc("Environment as `KEY=value`, in order."))
    cwd: str = field(default="/", metadata=doc("Working directory, created when missing."))
    user: str = field(default="", metadata=doc("`user[:group]` by name or id, resolved in the root filesystem; empty: root."))
    hostname: str = field(default="", metadata=doc("Hostname; empty: the runtime's default."))
    network: Literal["default", "none", "host"] = field(default="default", metadata=doc("`none`: only loopback; `host`: the host's network; `default`: the solver's default (host)."))
    security: Literal["sandbox", "insecure"] = field(default="sandbox", metadata=doc("`insecure` grants all capabilities (must be allowed by the user when solving)."))


# --------------------------------------------------------------------------- file


@dataclass(frozen=True, slots=True)
class CopyAction:
    src: int = field(metadata=doc("Index into the op's `inputs` to copy from."))
    src_path: str = field(metadata=doc("Path in the source; may hold wildcards when `allow_wildcard`."))
    dest: str = field(metadata=doc("Absolute destination path; a trailing `/` means a directory."))
    owner: Owner | None = field(default=None, metadata=doc("Owner of copied files; absent: 0:0."))
    chmod: str = field(default="", metadata=doc("Mode of copied files: octal (`0755`) or symbolic (`u+x,g-w`); empty: keep."))
    follow_symlinks: bool = field(default=False, metadata=doc("Follow a symlink named by `src_path`."))
    contents_only: bool = field(default=False, metadata=doc("Copy a directory's contents rather than the directory."))
    allow_wildcard: bool = field(default=False, metadata=doc("Expand `*`, `?`, `[…]` in `src_path`."))
    allow_empty_wildcard: bool = field(default=False, metadata=doc("A wildcard matching nothing is not an error."))
    create_dest_path: bool = field(default=False, metadata=doc("Create missing parent directories of `dest`."))
    include: tuple[str, ...] = field(default=(), metadata=doc("Only paths matching these patterns."))
    exclude: tuple[str, ...] = field(default=(), metadata=doc("Skip paths matching these patterns."))
    parents: bool = field(default=False, metadata=doc("Keep the source's parent directories below `dest` (`COPY --parents`)."))
    unpack: bool = field(default=False, metadata=doc("Extract a tar archive (optionally compressed) instead of copying it."))
    timestamp: int = field(default=-1, metadata=doc("Set mtimes to this Unix time; -1: keep."))


@dataclass(frozen=True, slots=True)
class MkfileAction:
    path: str = field(metadata=doc("Absolute path of the new file."))
    data: bytes = field(default=b"", metadata=doc("Contents."))
    mode: int = field(default=0o644, metadata=doc("Permission bits."))
    owner: Owner | None = field(default=None, metadata=doc("Owner; absent: 0:0."))
    timestamp: int = field(default=-1, metadata=doc("mtime as Unix time; -1: now."))


@dataclass(frozen=True, slots=True)
class MkdirAction:
    path: str = field(metadata=doc("Absolute path of the new directory."))
    mode: int = field(default=0o755, metadata=doc("Permission bits."))
    parents: bool = field(default=False, metadata=doc("Create missing parents and accept an existing directory."))
    owner: Owner | None = field(default=None, metadata=doc("Owner; absent: 0:0."))
    timestamp: int = field(default=-1, metadata=doc("mtime as Unix time; -1: now."))


@dataclass(frozen=True, slots=True)
class RmAction:
    path: str = field(metadata=doc("Absolute path to remove, recursively."))
    allow_not_found: bool = field(default=False, metadata=doc("A missing path is not an error."))
    allow_wildcard: bool = field(default=False, metadata=doc("Expand wildcards in `path`."))


@dataclass(frozen=True, slots=True)
class SymlinkAction:
    target: str = field(metadata=doc("What the link points to (stored verbatim)."))
    path: str = field(metadata=doc("Absolute path of the new link."))
    owner: Owner | None = field(default=None, metadata=doc("Owner; absent: 0:0."))
    timestamp: int = field(default=-1, metadata=doc("mtime as Unix time; -1: now."))


@dataclass(frozen=True, slots=True)
class FileAction:
    copy: CopyAction | None = field(default=None, metadata=doc("Copy files from an input."))
    mkfile: MkfileAction | None = field(default=None, metadata=doc("Create a file."))
    mkdir: MkdirAction | None = field(default=None, metadata=doc("Create a directory."))
    rm: RmAction | None = field(default=None, metadata=doc("Remove a path."))
    symlink: SymlinkAction | None = field(default=None, metadata=doc("Create a symbolic link."))


@dataclass(frozen=True, slots=True)
class FileOp:
    actions: tuple[FileAction, ...] = field(metadata=doc("Actions applied in order to the base."))
    base: int = field(default=0, metadata=doc("Index into `inputs` of the filesystem to start from; -1: empty."))


# --------------------------------------------------------------------------- merge, diff, image


@dataclass(frozen=True, slots=True)
class MergeOp:
    """Union of all inputs' filesystems, later inputs winning, deletions in later inputs applied."""


@dataclass(frozen=True, slots=True)
class DiffOp:
    """What `inputs[1]` (upper) changes relative to `inputs[0]` (lower), deletions as whiteouts."""


@dataclass(frozen=True, slots=True)
class Healthcheck:
    test: tuple[str, ...] = field(metadata=doc("`[\"NONE\"]`, `[\"CMD\", …]` or `[\"CMD-SHELL\", cmd]`."))
    interval: int = field(default=0, metadata=doc("Nanoseconds; 0: inherit the default."))
    timeout: int = field(default=0, metadata=doc("Nanoseconds."))
    start_period: int = field(default=0, metadata=doc("Nanoseconds."))
    start_interval: int = field(default=0, metadata=doc("Nanoseconds."))
    retries: int = field(default=0, metadata=doc("Consecutive failures before unhealthy."))


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """The runtime configuration of an image, as the OCI image config's `config` object."""

    env: tuple[str, ...] = field(default=(), metadata=doc("`Env`, as `KEY=value` in order."))
    cmd: tuple[str, ...] = field(default=(), metadata=doc("`Cmd`."))
    entrypoint: tuple[str, ...] = field(default=(), metadata=doc("`Entrypoint`."))
    working_dir: str = field(default="", metadata=doc("`WorkingDir`."))
    user: str = field(default="", metadata=doc("`User`."))
    labels: dict[str, str] = field(default_factory=FrozenMap, metadata=doc("`Labels`."))
    exposed_ports: tuple[str, ...] = field(default=(), metadata=doc("`ExposedPorts` keys, e.g. `80/tcp`.", flag=SORTED))
    volumes: tuple[str, ...] = field(default=(), metadata=doc("`Volumes` keys.", flag=SORTED))
    stop_signal: str = field(default="", metadata=doc("`StopSignal`."))
    healthcheck: Healthcheck | None = field(default=None, metadata=doc("`Healthcheck`."))
    shell: tuple[str, ...] = field(default=(), metadata=doc("`Shell` (Docker extension)."))
    on_build: tuple[str, ...] = field(default=(), metadata=doc("`OnBuild` triggers (Docker extension)."))

    def __post_init__(self) -> None:
        _sort_sets(self)
        if type(self.labels) is not FrozenMap:
            object.__setattr__(self, "labels", FrozenMap(self.labels))


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    created_by: str = field(default="", metadata=doc("The instruction that made this step."))
    comment: str = field(default="", metadata=doc("Free text."))
    created: str = field(default="", metadata=doc("RFC 3339 time; empty: the exporter's build time or SOURCE_DATE_EPOCH."))
    empty_layer: bool = field(default=False, metadata=doc("This step changed no files."))


@dataclass(frozen=True, slots=True)
class ImageOp:
    """An image: the root filesystem of `inputs[0]` with a runtime config and history."""

    config: ImageConfig = field(default_factory=ImageConfig, metadata=doc("Runtime config."))
    history: tuple[HistoryEntry, ...] = field(default=(), metadata=doc("History, oldest first, base image's included."))
    platform: Platform = field(default_factory=Platform, metadata=doc("Platform of the image."))


# --------------------------------------------------------------------------- the op


@dataclass(frozen=True)
class Op:
    """One node. Its digest is `sha256:` over its canonical bytes, inputs included (a Merkle DAG)."""

    # Not slotted: ``ir.codec`` caches the canonical bytes and digest in the instance dict.

    inputs: tuple[Ref, ...] = field(default=(), metadata=doc("Edges to the ops this one reads, in order."))
    source: SourceOp | None = field(default=None, metadata=doc("A source of files."))
    exec: ExecOp | None = field(default=None, metadata=doc("Run a process."))
    file: FileOp | None = field(default=None, metadata=doc("File actions."))
    merge: MergeOp | None = field(default=None, metadata=doc("Union of inputs."))
    diff: DiffOp | None = field(default=None, metadata=doc("Difference of two inputs."))
    image: ImageOp | None = field(default=None, metadata=doc("Attach an image config."))

    @property
    def kind(self) -> str:
        for name in OP_KINDS:
            if getattr(self, name) is not None:
                return name
        raise AssertionError("op with no kind")


OP_KINDS = ("source", "exec", "file", "merge", "diff", "image")

# Tagged unions: exactly one field set.
ONE_OF = (Op, SourceOp, FileAction)


# --------------------------------------------------------------------------- metadata (not hashed)


@dataclass(frozen=True, slots=True)
class Location:
    """A span in one of the document's `sources`; lines and columns 1-based, end inclusive."""

    file: int = field(metadata=doc("Index into `sources`."))
    line: int = field(metadata=doc("First line."))
    column: int = field(default=0, metadata=doc("First column; 0: unknown."))
    end_line: int = field(default=0, metadata=doc("Last line; 0: same as `line`."))
    end_column: int = field(default=0, metadata=doc("Last column; 0: unknown."))


@dataclass(frozen=True, slots=True)
class OpMetadata:
    description: str = field(default="", metadata=doc("Human description, e.g. `[build 3/5] RUN make`."))
    group: str = field(default="", metadata=doc("Progress group, e.g. the stage name."))
    locations: tuple[Location, ...] = field(default=(), metadata=doc("Where in the sources this op came from."))


@dataclass(frozen=True, slots=True)
class SourceFile:
    name: str = field(metadata=doc("File name as the user knows it."))
    language: str = field(default="", metadata=doc("Frontend that read it, e.g. `dockerfile`."))
    data: bytes = field(default=b"", metadata=doc("Its contents, so errors can quote the lines."))


@dataclass(frozen=True, slots=True)
class Document:
    """A whole graph: the decoded msgpack payload of an IR file."""

    version: int = field(metadata=doc("Major version; this spec is 1."))
    ops: dict[str, Op] = field(metadata=doc("Every op, keyed by its digest."))
    roots: dict[str, Ref] = field(metadata=doc("Named targets; `default` is built when none is named."))
    features: tuple[str, ...] = field(default=(), metadata=doc("Every feature the graph uses.", flag=SORTED))
    metadata: dict[str, OpMetadata] = field(default_factory=dict, metadata=doc("Per-op metadata keyed by digest; not hashed."))
    sources: tuple[SourceFile, ...] = field(default=(), metadata=doc("Source files that `Location`s point into."))

    def __post_init__(self) -> None:
        _sort_sets(self)


def _sort_sets(obj) -> None:
    """Order-insensitive lists are kept sorted and unique, so equal values compare equal."""
    for f in fields(obj):
        if f.metadata.get("flag") == SORTED:
            object.__setattr__(obj, f.name, tuple(sorted(set(getattr(obj, f.name)))))
