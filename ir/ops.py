"""The IR v1 node types: the single definition of the build graph.

Every class here is a frozen ``msgspec.Struct`` whose fields *are* the wire format: the field name
is the msgpack key, the Python default is the spec default (and is omitted on the wire), and the
``doc`` annotation is the text the spec and the JSON Schema use.  The codec (``ir/codec.py``,
``ir/wire.py``) and the schema (``ir/schema.py``) are derived from these classes, so the format
is defined exactly once.  Structs rather than dataclasses because msgspec decodes msgpack straight
into them in C, which is what lets a 100,000-op graph load in a fraction of a second.

A class listed in ``ONE_OF`` is a tagged union: exactly one of its fields is set.
"""

from __future__ import annotations

import functools
import re
import typing
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
from msgspec.structs import force_setattr

replace = msgspec.structs.replace  # ``ops.replace(op, exec=…)``: a new node with some fields changed


class _Sorted:
    def __repr__(self) -> str:
        return "SORTED"


SORTED = _Sorted()  # annotation marker: an order-insensitive list, stored sorted and unique


def doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


class Node(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """Base of every IR class: immutable, strict about unknown keys, defaults left off the wire.
    ``gc=False``: nodes form trees, never cycles, so the collector need not track millions of them.

    msgspec omits a field when its value *is* the default object, not when it equals it.  A
    decoded field that was absent holds the default object; one that was present holds a new
    object, and for a canonical file it differs from the default.  So re-encoding a decoded node
    gives back exactly its input bytes, which is how ``ir.codec`` checks canonical form in C.  The
    exception is a default that decoding cannot reproduce by identity (``0o644``, ``"linux"``,
    ``Platform()``): the classes with such fields (``defaults_by_identity``) have a
    ``__post_init__`` that swaps an equal value for the default object, so a present field equal
    to its default is dropped on re-encoding and the file is refused as non-canonical."""


class FieldSpec(NamedTuple):
    """One field of an IR class as the codec, schema and spec tables need it."""

    name: str
    type: Any        # the plain type, ``Annotated`` stripped
    doc: str
    sorted: bool     # an order-insensitive list (``SORTED``)
    required: bool
    default: Any     # the default value (``None`` when required)


def is_node(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Node)


@functools.cache
def field_specs(cls: type) -> tuple[FieldSpec, ...]:
    """The fields of ``cls`` in definition order."""
    hints = typing.get_type_hints(cls, include_extras=True)
    out = []
    for f in msgspec.structs.fields(cls):
        hint = hints[f.name]
        extras = getattr(hint, "__metadata__", ())
        text = next((m.description for m in extras if isinstance(m, msgspec.Meta)), "") or ""
        required = f.required
        default = (None if required else f.default if f.default is not msgspec.NODEFAULT
                   else f.default_factory())
        out.append(FieldSpec(f.name, typing.get_args(hint)[0] if extras else hint, text, SORTED in extras,
                             required, default))
    return tuple(out)


def _sorted_set(items: tuple) -> tuple:
    return tuple(sorted(set(items)))


def _decoded_as_itself(spec: FieldSpec) -> bool:
    """Whether msgspec decodes this field's default value as the default object itself: shared
    immutables (None, booleans, small ints, empty and one-ASCII-character strings, ``()``, ``b""``) and
    ``Literal`` members (msgspec returns the literal's own object)."""
    d = spec.default
    return (d is None or d is True or d is False or d == () or d == b"" or (isinstance(d, dict) and not d)
            or (type(d) is int and -5 <= d <= 256) or (type(d) is str and len(d) <= 1 and d < "\x80")
            or typing.get_origin(spec.type) is Literal)


@functools.cache
def defaults_by_identity(cls: type) -> tuple[tuple[str, Any], ...]:
    """(field, default object) of the fields of ``cls`` that ``__post_init__`` must normalise."""
    return tuple((f.name, f.default) for f in field_specs(cls) if not f.required and not _decoded_as_itself(f))


def _default_identity(self: Node) -> None:
    """``__post_init__`` of the classes ``defaults_by_identity`` names (see ``Node``)."""
    for name, default in defaults_by_identity(type(self)):
        value = getattr(self, name)
        if value is not default and value == default:
            force_setattr(self, name, default)


class FrozenMap(dict):
    """A read-only, hashable ``dict`` for map-valued fields of frozen ops (``ImageConfig.labels``),
    so an op stays immutable — its cached digest cannot go stale — and hashable.  It is a ``dict``
    subclass: it compares equal to a plain dict with the same items and encodes the same way."""

    __slots__ = ()

    def _readonly(self, *args, **kwargs):
        raise TypeError("an IR op's map is read-only; build a new op (ops.replace)")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly  # type: ignore[assignment]
    __ior__ = _readonly  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))

    def __reduce__(self):
        return (FrozenMap, (dict(self),))

    def __repr__(self) -> str:
        return dict.__repr__(self)


EMPTY_MAP = FrozenMap()


# --------------------------------------------------------------------------- edges and shared


class Ref(Node):
    """An edge: output ``output`` of the op whose digest is ``op``."""

    op: Annotated[str, doc("Digest of the producing op, `sha256:` + 64 lowercase hex digits.")]
    output: Annotated[int, doc("Output index of that op.")] = 0


class Platform(Node):
    os: Annotated[str, doc("GOOS-style operating system.")] = "linux"
    architecture: Annotated[str, doc("GOARCH-style architecture.")] = "amd64"
    variant: Annotated[str, doc("CPU variant, e.g. `v8` for arm64.")] = ""

    __post_init__ = _default_identity


class Owner(Node):
    """A user and group, each a name (resolved in the destination's /etc/passwd, /etc/group) or an id."""

    user: Annotated[str, doc("User name or numeric id; empty means 0.")] = ""
    group: Annotated[str, doc("Group name or numeric id; empty: the same number as a numeric user, a named user's primary group, or 0 when `user` is empty too.")] = ""


# --------------------------------------------------------------------------- source


class ImageSource(Node):
    ref: Annotated[str, doc("Fully qualified reference, e.g. `127.0.0.1:5000/busybox:latest`.")]
    digest: Annotated[str, doc("Digest pinning the image: an index (the manifest for `platform` is selected from it) or a single manifest (used as it is); empty: resolve `ref` when solving.")] = ""
    platform: Annotated[Platform, doc("Platform to select from an index.")] = Platform()

    __post_init__ = _default_identity


class LocalSource(Node):
    name: Annotated[str, doc("Name of a local directory granted by the user when solving (e.g. `context`).")]
    include: Annotated[tuple[str, ...], doc("Only these patterns (dockerignore syntax); empty: all.")] = ()
    exclude: Annotated[tuple[str, ...], doc("Excluded patterns in order, dockerignore syntax, `!` re-includes.")] = ()


class HTTPSource(Node):
    url: Annotated[str, doc("`http://` or `https://` URL.")]
    checksum: Annotated[str, doc("Expected `sha256:` digest of the body; a mismatch fails the op.")] = ""
    filename: Annotated[str, doc("File name in the output; default: last URL path segment.")] = ""
    mode: Annotated[int, doc("Permission bits of the file.")] = 0o644

    __post_init__ = _default_identity


class GitSource(Node):
    remote: Annotated[str, doc("Repository URL as the git CLI accepts it.")]
    ref: Annotated[str, doc("Branch, tag or commit; empty: the remote's HEAD.")] = ""
    keep_git_dir: Annotated[bool, doc("Keep the `.git` directory in the output.")] = False
    subdir: Annotated[str, doc("Only this sub-directory of the checkout, written relative (`docs/api`).")] = ""


class OCILayoutSource(Node):
    name: Annotated[str, doc("Name of an OCI image layout granted by the user when solving.")]
    ref: Annotated[str, doc("Tag (`org.opencontainers.image.ref.name`) inside the layout.")] = ""
    digest: Annotated[str, doc("Manifest digest inside the layout; wins over `ref`.")] = ""
    platform: Annotated[Platform, doc("Platform to select from an index.")] = Platform()

    __post_init__ = _default_identity


class ScratchSource(Node):
    """An empty filesystem."""


class SourceOp(Node):
    image: Annotated[ImageSource | None, doc("A registry image's root filesystem.")] = None
    local: Annotated[LocalSource | None, doc("Files of a local directory.")] = None
    http: Annotated[HTTPSource | None, doc("One file downloaded over HTTP(S).")] = None
    git: Annotated[GitSource | None, doc("A git checkout.")] = None
    oci_layout: Annotated[OCILayoutSource | None, doc("An image from an OCI layout on disk.")] = None
    scratch: Annotated[ScratchSource | None, doc("Nothing at all.")] = None


# --------------------------------------------------------------------------- exec


# The closed value sets of exec fields, each spelled once: the field types below use them and
# frontends check user input against the derived tuples (``SHARING_MODES`` …), never a copy.
Sharing = Literal["shared", "private", "locked"]
MountType = Literal["bind", "cache", "tmpfs", "secret", "ssh"]
Network = Literal["default", "none", "host"]
Security = Literal["sandbox", "insecure"]
SHARING_MODES: tuple[str, ...] = typing.get_args(Sharing)
MOUNT_TYPES: tuple[str, ...] = typing.get_args(MountType)
NETWORK_MODES: tuple[str, ...] = typing.get_args(Network)
SECURITY_MODES: tuple[str, ...] = typing.get_args(Security)
# docker's `--ulimit` names (go-units `ulimitNameMapping`: `as` is not among them), each an RLIMIT_<NAME>.
UlimitName = Literal["core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc",
                     "rss", "rtprio", "rttime", "sigpending", "stack"]
ULIMIT_NAMES: tuple[str, ...] = typing.get_args(UlimitName)
# A host name as /etc/hosts can hold it: one whitespace-free token (no line or field of its own can be
# smuggled in); RFC 1123 letters plus `_`, which Docker accepts too.
HOST_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,252}\Z")
# A platform's os, architecture and variant name directories (``linux_arm64/`` of a multi-platform
# local export), are joined with ``/`` and read back (the emulation check) and are printed: names,
# never paths, terminal sequences or more than a file name holds.
PLATFORM_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}\Z")
MAX_ID = (1 << 32) - 2  # the largest uid/gid a file can be given ((uid_t)-1 means "no id" to chown)
MAX_SHM_SIZE = 1 << 36  # 64 GiB: /dev/shm is memory; a larger size is a mistake or an attack, never a build's need


class CacheOptions(Node):
    id: Annotated[str, doc("Cache identity; mounts with the same id share one persistent directory.")]
    sharing: Annotated[Sharing, doc("`shared`: concurrent users share it; `private`: each concurrent user gets its own; `locked`: one at a time.")] = "shared"
    uid: Annotated[int, doc("Owner of the directory when first created.")] = 0
    gid: Annotated[int, doc("Group of the directory when first created.")] = 0
    mode: Annotated[int, doc("Mode of the directory when first created.")] = 0o755

    __post_init__ = _default_identity


class TmpfsOptions(Node):
    size: Annotated[int, doc("Size limit in bytes; 0: the runtime's default.")] = 0


class SecretOptions(Node):
    id: Annotated[str, doc("Secret id; the value is supplied by the user when solving, never stored in the IR.")]
    env: Annotated[str, doc("Expose the value in this environment variable instead of a file.")] = ""
    uid: Annotated[int, doc("Owner of the secret file.")] = 0
    gid: Annotated[int, doc("Group of the secret file.")] = 0
    mode: Annotated[int, doc("Mode of the secret file.")] = 0o400
    required: Annotated[bool, doc("Fail when the secret is not supplied (else the mount is skipped).")] = False


class SSHOptions(Node):
    id: Annotated[str, doc("SSH agent id granted with `--ssh ID=…`.")] = "default"
    uid: Annotated[int, doc("Owner of the socket.")] = 0
    gid: Annotated[int, doc("Group of the socket.")] = 0
    mode: Annotated[int, doc("Mode of the socket.")] = 0o600
    required: Annotated[bool, doc("Fail when no agent is supplied.")] = False

    __post_init__ = _default_identity


class Mount(Node):
    target: Annotated[str, doc("Absolute path inside the container; mounts[0] MUST be `/`.")]
    type: Annotated[MountType, doc("Mount type.")] = "bind"
    input: Annotated[int, doc("Index into the op's `inputs` mounted here (bind), or seeding it (cache); -1: none (empty).")] = -1
    selector: Annotated[str, doc("Path inside the input to mount instead of its root, written absolute (`/src`).")] = ""
    readonly: Annotated[bool, doc("Mount read-only.")] = False
    output: Annotated[int, doc("Output index receiving this mount's final contents; -1: discarded.")] = -1
    cache: Annotated[CacheOptions | None, doc("Required for, and only for, `type: cache`.")] = None
    tmpfs: Annotated[TmpfsOptions | None, doc("Required for, and only for, `type: tmpfs` (`{}` when every option is at its default).")] = None
    secret: Annotated[SecretOptions | None, doc("Required for, and only for, `type: secret`.")] = None
    ssh: Annotated[SSHOptions | None, doc("Required for, and only for, `type: ssh` (`{}` when every option is at its default).")] = None


class HostIP(Node):
    """One line of a step's `/etc/hosts` (`--add-host HOST:IP`)."""

    host: Annotated[str, doc("Host name: letters, digits, `.`, `-`, `_` (at most 253 characters).")]
    ip: Annotated[str, doc("IPv4 or IPv6 address in its canonical text form (`::1`, not `0:0::1`).")]


class Ulimit(Node):
    """One resource limit of a step's process (`--ulimit NAME=SOFT[:HARD]`)."""

    name: Annotated[UlimitName, doc("docker's name of the limit: `nofile` is `RLIMIT_NOFILE` …")]
    soft: Annotated[int, doc("Soft limit; -1: unlimited.")]
    hard: Annotated[int, doc("Hard limit, at least `soft`; -1: unlimited.")]


class ExecOp(Node):
    args: Annotated[tuple[str, ...], doc("argv; args[0] is looked up in PATH of `env`.")]
    mounts: Annotated[tuple[Mount, ...], doc("Mounts; the first is the root filesystem at `/`.")]
    env: Annotated[tuple[str, ...], doc("The whole environment as `KEY=value`, in order; nothing is inherited from the base image (§ 6.1).")] = ()
    cwd: Annotated[str, doc("Working directory; created when missing, owned by the process's user and group, mode 0755 (§ 6.1).")] = "/"
    user: Annotated[str, doc("`user[:group]` by name or id, resolved in the root filesystem; empty: root.")] = ""
    hostname: Annotated[str, doc("Hostname; empty: the runtime's default.")] = ""
    network: Annotated[Network, doc("`none`: only loopback; `host`: the host's network; `default`: the solver's default (irctl: a private network namespace per step, outbound access only).")] = "default"
    security: Annotated[Security, doc("`insecure` grants all capabilities (must be allowed by the user when solving).")] = "sandbox"
    platform: Annotated[Platform, doc("The platform the process runs as; one other than the host's runs under user-mode emulation (binfmt_misc), which the solver checks is registered before running it.")] = Platform()
    extra_hosts: Annotated[tuple[HostIP, ...], doc("Lines appended to the step's `/etc/hosts`, in order.")] = ()
    shm_size: Annotated[int, doc("Size of `/dev/shm` in bytes, at most 2^36 (64 GiB); 0: the runtime's default (64 MiB).")] = 0
    ulimits: Annotated[tuple[Ulimit, ...], doc("Resource limits of the process, sorted by `name`, each name once; a limit not named keeps the runtime's default.")] = ()

    __post_init__ = _default_identity


# --------------------------------------------------------------------------- file


class CopyAction(Node):
    src: Annotated[int, doc("Index into the op's `inputs` to copy from.")]
    src_path: Annotated[str, doc("Absolute path in the source (`/` is its root); may hold wildcards when `allow_wildcard`.")]
    dest: Annotated[str, doc("Absolute destination path; a trailing `/` means a directory.")]
    owner: Annotated[Owner | None, doc("Owner of copied files; absent: each keeps its owner in the source.")] = None
    chmod: Annotated[str, doc("Mode of copied files: octal (`0755`) or symbolic (`u+x,g-w`); empty: keep.")] = ""
    follow_symlinks: Annotated[bool, doc("Follow a symlink named by `src_path`.")] = False
    contents_only: Annotated[bool, doc("Copy a directory's contents rather than the directory.")] = False
    allow_wildcard: Annotated[bool, doc("Expand `*`, `?`, `[…]` in `src_path`.")] = False
    allow_empty_wildcard: Annotated[bool, doc("A wildcard matching nothing is not an error.")] = False
    create_dest_path: Annotated[bool, doc("Create missing parent directories of `dest`.")] = False
    include: Annotated[tuple[str, ...], doc("Only paths matching these patterns.")] = ()
    exclude: Annotated[tuple[str, ...], doc("Skip paths matching these patterns.")] = ()
    parents: Annotated[bool, doc("Keep the source's parent directories below `dest` (`COPY --parents`).")] = False
    unpack: Annotated[bool, doc("Extract a tar archive (optionally compressed) instead of copying it.")] = False
    timestamp: Annotated[int, doc("Set mtimes to this Unix time; -1: keep.")] = -1


class MkfileAction(Node):
    path: Annotated[str, doc("Absolute path of the new file.")]
    data: Annotated[bytes, doc("Contents.")] = b""
    mode: Annotated[int, doc("Permission bits.")] = 0o644
    owner: Annotated[Owner | None, doc("Owner; absent: 0:0.")] = None
    timestamp: Annotated[int, doc("mtime as Unix time; -1: now.")] = -1

    __post_init__ = _default_identity


class MkdirAction(Node):
    path: Annotated[str, doc("Absolute path of the new directory.")]
    mode: Annotated[int, doc("Permission bits.")] = 0o755
    parents: Annotated[bool, doc("Create missing parents and accept an existing directory.")] = False
    owner: Annotated[Owner | None, doc("Owner; absent: 0:0.")] = None
    timestamp: Annotated[int, doc("mtime as Unix time; -1: now.")] = -1

    __post_init__ = _default_identity


class RmAction(Node):
    path: Annotated[str, doc("Absolute path to remove, recursively.")]
    allow_not_found: Annotated[bool, doc("A missing path is not an error.")] = False
    allow_wildcard: Annotated[bool, doc("Expand wildcards in `path`.")] = False


class SymlinkAction(Node):
    target: Annotated[str, doc("What the link points to (stored verbatim).")]
    path: Annotated[str, doc("Absolute path of the new link.")]
    owner: Annotated[Owner | None, doc("Owner; absent: 0:0.")] = None
    timestamp: Annotated[int, doc("mtime as Unix time; -1: now.")] = -1


class FileAction(Node):
    copy: Annotated[CopyAction | None, doc("Copy files from an input.")] = None
    mkfile: Annotated[MkfileAction | None, doc("Create a file.")] = None
    mkdir: Annotated[MkdirAction | None, doc("Create a directory.")] = None
    rm: Annotated[RmAction | None, doc("Remove a path.")] = None
    symlink: Annotated[SymlinkAction | None, doc("Create a symbolic link.")] = None


class FileOp(Node):
    actions: Annotated[tuple[FileAction, ...], doc("Actions applied in order to the base.")]
    base: Annotated[int, doc("Index into `inputs` of the filesystem to start from; -1: empty.")] = 0


# --------------------------------------------------------------------------- merge, diff, image


class MergeOp(Node):
    """Union of all inputs' filesystems, later inputs winning, deletions in later inputs applied."""


class DiffOp(Node):
    """What `inputs[1]` (upper) changes relative to `inputs[0]` (lower), deletions as whiteouts."""


class Healthcheck(Node):
    test: Annotated[tuple[str, ...], doc("`[\"NONE\"]`, `[\"CMD\", …]` or `[\"CMD-SHELL\", cmd]`.")]
    interval: Annotated[int, doc("Nanoseconds; 0: inherit the default.")] = 0
    timeout: Annotated[int, doc("Nanoseconds.")] = 0
    start_period: Annotated[int, doc("Nanoseconds.")] = 0
    start_interval: Annotated[int, doc("Nanoseconds.")] = 0
    retries: Annotated[int, doc("Consecutive failures before unhealthy.")] = 0


class ImageConfig(Node):
    """The runtime configuration of an image, as the OCI image config's `config` object."""

    env: Annotated[tuple[str, ...], doc("`Env`, as `KEY=value` in order.")] = ()
    cmd: Annotated[tuple[str, ...], doc("`Cmd`.")] = ()
    entrypoint: Annotated[tuple[str, ...], doc("`Entrypoint`.")] = ()
    working_dir: Annotated[str, doc("`WorkingDir`.")] = ""
    user: Annotated[str, doc("`User`.")] = ""
    labels: Annotated[dict[str, str], doc("`Labels`.")] = EMPTY_MAP
    exposed_ports: Annotated[tuple[str, ...], doc("`ExposedPorts` keys, e.g. `80/tcp`."), SORTED] = ()
    volumes: Annotated[tuple[str, ...], doc("`Volumes` keys."), SORTED] = ()
    stop_signal: Annotated[str, doc("`StopSignal`.")] = ""
    healthcheck: Annotated[Healthcheck | None, doc("`Healthcheck`.")] = None
    shell: Annotated[tuple[str, ...], doc("`Shell` (Docker extension).")] = ()
    on_build: Annotated[tuple[str, ...], doc("`OnBuild` triggers (Docker extension).")] = ()

    def __post_init__(self) -> None:
        # Order-insensitive lists are kept sorted and unique, so equal values compare equal; labels
        # become read-only (and hashable) so a node cannot change under its cached digest.
        if self.exposed_ports:
            force_setattr(self, "exposed_ports", _sorted_set(self.exposed_ports))
        if self.volumes:
            force_setattr(self, "volumes", _sorted_set(self.volumes))
        if type(self.labels) is not FrozenMap:
            force_setattr(self, "labels", FrozenMap(self.labels) if self.labels else EMPTY_MAP)


class HistoryEntry(Node):
    created_by: Annotated[str, doc("The instruction that made this step.")] = ""
    comment: Annotated[str, doc("Free text.")] = ""
    created: Annotated[str, doc("RFC 3339 time; empty: when the step that made the entry's layer ran (kept while it is cached; an empty entry takes the time before it), or SOURCE_DATE_EPOCH.")] = ""
    empty_layer: Annotated[bool, doc("This step changed no files.")] = False


class ImageOp(Node):
    """An image: the root filesystem of `inputs[0]` with a runtime config and history."""

    config: Annotated[ImageConfig, doc("Runtime config.")] = ImageConfig()
    history: Annotated[tuple[HistoryEntry, ...], doc("History, oldest first, the base image's entries first (§ 6.4).")] = ()
    platform: Annotated[Platform, doc("Platform of the image.")] = Platform()

    __post_init__ = _default_identity


# --------------------------------------------------------------------------- the op


class Op(Node, dict=True, gc=True):
    """One node. Its digest is `sha256:` over its canonical bytes, inputs included (a Merkle DAG)."""

    # ``dict=True``: ``ir.codec`` caches the canonical bytes and digest in the instance dict.

    inputs: Annotated[tuple[Ref, ...], doc("Edges to the ops this one reads, in order.")] = ()
    source: Annotated[SourceOp | None, doc("A source of files.")] = None
    exec: Annotated[ExecOp | None, doc("Run a process.")] = None
    file: Annotated[FileOp | None, doc("File actions.")] = None
    merge: Annotated[MergeOp | None, doc("Union of inputs.")] = None
    diff: Annotated[DiffOp | None, doc("Difference of two inputs.")] = None
    image: Annotated[ImageOp | None, doc("Attach an image config.")] = None

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


class Location(Node):
    """A span in one of the document's `sources`; lines and columns 1-based, end inclusive."""

    file: Annotated[int, doc("Index into `sources`.")]
    line: Annotated[int, doc("First line.")]
    column: Annotated[int, doc("First column; 0: unknown.")] = 0
    end_line: Annotated[int, doc("Last line; 0: same as `line`.")] = 0
    end_column: Annotated[int, doc("Last column; 0: unknown.")] = 0


class OpMetadata(Node):
    description: Annotated[str, doc("Human description, e.g. `[build 3/5] RUN make`.")] = ""
    group: Annotated[str, doc("Progress group, e.g. the stage name.")] = ""
    locations: Annotated[tuple[Location, ...], doc("Where in the sources this op came from.")] = ()


class SourceFile(Node):
    name: Annotated[str, doc("File name as the user knows it.")]
    language: Annotated[str, doc("Frontend that read it, e.g. `dockerfile`.")] = ""
    data: Annotated[bytes, doc("Its contents, so errors can quote the lines.")] = b""


class Document(Node):
    """A whole graph: the decoded msgpack payload of an IR file."""

    version: Annotated[int, doc("Major version; this spec is 1.")]
    ops: Annotated[dict[str, Op], doc("Every op, keyed by its digest.")]
    roots: Annotated[dict[str, Ref], doc("Named targets (`NAME` or `NAME@os/arch[/variant]`, § 7); `default` is built when none is named.")]
    features: Annotated[tuple[str, ...], doc("Every feature the graph uses."), SORTED] = ()
    metadata: Annotated[dict[str, OpMetadata], doc("Per-op metadata keyed by digest; not hashed.")] = {}
    sources: Annotated[tuple[SourceFile, ...], doc("Source files that `Location`s point into.")] = ()

    def __post_init__(self) -> None:
        if self.features:
            force_setattr(self, "features", _sorted_set(self.features))
