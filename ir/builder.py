"""An immutable, chainable Python API for emitting IR graphs.

    base = image("127.0.0.1:5000/busybox:latest", digest=...)
    ctx = local("context")
    app = (base.with_env("GOFLAGS", "-mod=mod")
               .with_mount(cache("/root/.cache"))
               .run(["sh", "-c", "make"], mounts=[bind("/src", ctx)])
               .copy(ctx, "README.md", "/app/"))
    doc = build_document({"default": app.with_image(ImageConfig(cmd=("/app/run",)))})

Every ``State`` is a value: each method returns a new one and shares the graph built so far.
Ops are hashed as they are made, so identical ops from any frontend are the same node.  The
frontends, the Python DSL and third-party Python generators all emit graphs through this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

from ir import features, normal, ops
from ir.codec import op_digest


@dataclass(frozen=True, slots=True, eq=False)
class Vertex:
    """One op in the graph under construction, with the vertices it reads and its metadata."""

    op: ops.Op
    digest: str
    inputs: tuple["Vertex", ...]
    meta: ops.OpMetadata | None = None


def vertex(op_kind: str, body, inputs: Sequence[tuple[Vertex, int]] = (), meta: ops.OpMetadata | None = None) -> Vertex:
    refs = tuple(ops.Ref(v.digest, out) for v, out in inputs)
    op = ops.Op(inputs=refs, **{op_kind: body})
    return Vertex(op, op_digest(op), tuple(v for v, _ in inputs), meta)


def _given(**fields) -> dict:
    """The fields that were given: the others take the IR's defaults (``ir/ops.py``), not a copy."""
    return {k: v for k, v in fields.items() if v is not None}


@dataclass(frozen=True, slots=True)
class RunMount:
    """An :class:`ops.Mount` for ``State.run`` before its indexes are known: ``state`` is the
    input it mounts (bind) or is seeded from (cache), ``output`` asks for its contents as an
    extra output.  ``run`` fills in ``mount.input`` and ``mount.output``; every option default
    is the IR's own (``ir/ops.py``), none is repeated here."""

    mount: ops.Mount
    state: "State | None" = None
    output: bool = False

    @property
    def target(self) -> str:
        return self.mount.target


def bind(target: str, state: "State", selector: str = "", readonly: bool = True, output: bool = False) -> RunMount:
    return RunMount(ops.Mount(target, "bind", selector=normal.selector(selector), readonly=readonly), state, output)


def cache(target: str, id: str = "", sharing: ops.Sharing | None = None, *, seed: "State | None" = None,
          selector: str = "", readonly: bool = False, **options) -> RunMount:
    """A persistent cache directory ``id`` (this API's shorthand: none given, the mount point);
    ``sharing`` and ``options`` (uid, gid, mode) default to :class:`ops.CacheOptions`'.  The
    frontends always give the id (BuildKit's rule: ``frontends.common.mounts.cache_id``)."""
    return RunMount(ops.Mount(target, "cache", selector=normal.selector(selector), readonly=readonly,
                              cache=ops.CacheOptions(id or target, **_given(sharing=sharing), **options)), seed)


def tmpfs(target: str, size: int | None = None) -> RunMount:
    """A memory filesystem at ``target``; ``size`` in bytes defaults to :class:`ops.TmpfsOptions`'."""
    return RunMount(ops.Mount(target, "tmpfs", tmpfs=ops.TmpfsOptions(**_given(size=size))))


def secret(id: str, target: str = "", **options) -> RunMount:
    """Secret ``id`` at ``target`` (default ``/run/secrets/<id>``); ``options`` (env, uid, gid,
    mode, required) default to :class:`ops.SecretOptions`'."""
    return RunMount(ops.Mount(target or f"/run/secrets/{id}", "secret", secret=ops.SecretOptions(id, **options)))


def ssh(target: str = "/run/buildkit/ssh_agent.0", id: str | None = None, **options) -> RunMount:
    """SSH agent ``id`` at ``target``; ``id`` and ``options`` (uid, gid, mode, required) default
    to :class:`ops.SSHOptions`'."""
    return RunMount(ops.Mount(target, "ssh", ssh=ops.SSHOptions(**_given(id=id), **options)))


@dataclass(frozen=True, slots=True)
class State:
    """A filesystem (one output of one vertex) plus the defaults later ``run`` calls inherit."""

    vertex: Vertex
    output: int = 0
    env: tuple[str, ...] = ()
    cwd: str = "/"
    user: str = ""
    mounts: tuple[RunMount, ...] = ()
    network: ops.Network | None = None  # None: ExecOp's default
    meta: ops.OpMetadata | None = field(default=None, compare=False)

    # -- chaining of defaults -------------------------------------------------------------

    def with_env(self, name: str, value: str) -> "State":
        kept = tuple(e for e in self.env if e.split("=", 1)[0] != name)
        return replace(self, env=kept + (f"{name}={value}",))

    def with_envs(self, env: Iterable[str]) -> "State":
        return replace(self, env=tuple(env))

    def with_cwd(self, cwd: str) -> "State":
        return replace(self, cwd=cwd)

    def with_user(self, user: str) -> "State":
        return replace(self, user=user)

    def with_network(self, network: ops.Network) -> "State":
        return replace(self, network=network)

    def with_mount(self, mount: RunMount) -> "State":
        """Add a mount to every later ``run`` from this state (like a default)."""
        return replace(self, mounts=self.mounts + (mount,))

    def with_meta(self, description: str = "", group: str = "",
                  locations: Sequence[ops.Location] = ()) -> "State":
        """Metadata for the next op made from this state (description, group, source map)."""
        return replace(self, meta=ops.OpMetadata(description, group, tuple(locations)))

    def _next(self, v: Vertex, output: int = 0) -> "State":
        return replace(self, vertex=v, output=output, meta=None)

    # -- ops ----------------------------------------------------------------------------

    def run(self, args: Sequence[str], *, mounts: Sequence[RunMount] = (), env: Sequence[str] | None = None,
            cwd: str | None = None, user: str | None = None, hostname: str = "", network: ops.Network | None = None,
            security: ops.Security | None = None, platform: ops.Platform | None = None,
            meta: ops.OpMetadata | None = None, **sandbox) -> "State":
        """Run ``args`` on this filesystem; returns the resulting root filesystem.  ``sandbox``:
        ``extra_hosts``, ``shm_size``, ``ulimits`` (``ops.ExecOp``), each left out when not given."""
        return self.run_outputs(args, mounts=mounts, env=env, cwd=cwd, user=user, hostname=hostname,
                                network=network, security=security, platform=platform, meta=meta, **sandbox)[0]

    def run_outputs(self, args: Sequence[str], *, mounts: Sequence[RunMount] = (), env=None, cwd=None, user=None,
                    hostname: str = "", network: ops.Network | None = None, security: ops.Security | None = None,
                    platform: ops.Platform | None = None, meta: ops.OpMetadata | None = None,
                    extra_hosts: Sequence[ops.HostIP] = (), shm_size: int = 0,
                    ulimits: Sequence[ops.Ulimit] = ()) -> list["State"]:
        """Like ``run`` but returns every output: the root first, then each ``output=True`` mount."""
        inputs: list[tuple[Vertex, int]] = [(self.vertex, self.output)]
        wire_mounts = [ops.Mount("/", input=0, output=0)]
        n_out = 1
        for m in (*self.mounts, *mounts):
            idx = -1
            if m.state is not None:
                key = (m.state.vertex.digest, m.state.output)
                found = [i for i, (v, o) in enumerate(inputs) if (v.digest, o) == key]
                if found:
                    idx = found[0]
                else:
                    inputs.append((m.state.vertex, m.state.output))
                    idx = len(inputs) - 1
            out = -1
            if m.output:
                out, n_out = n_out, n_out + 1
            wire_mounts.append(ops.replace(m.mount, input=idx, output=out))
        body = ops.ExecOp(args=tuple(args), mounts=tuple(wire_mounts),
                          env=tuple(self.env if env is None else env), cwd=cwd or self.cwd,
                          user=self.user if user is None else user, hostname=hostname,
                          **_given(network=network or self.network, security=security, platform=platform,
                                   extra_hosts=tuple(extra_hosts) or None, shm_size=shm_size or None,
                                   ulimits=tuple(sorted(ulimits, key=lambda u: u.name)) or None))
        v = vertex("exec", body, inputs, meta or self.meta)
        return [self._next(v, i) for i in range(n_out)]

    def file(self, actions: Sequence[ops.FileAction], sources: Sequence["State"] = (), *,
             meta: ops.OpMetadata | None = None, on_scratch: bool = False) -> "State":
        """Apply file actions; ``sources`` are the states copy actions name by index (0 = first)."""
        inputs: list[tuple[Vertex, int]] = [] if on_scratch else [(self.vertex, self.output)]
        remap = {}
        for i, s in enumerate(sources):
            key = (s.vertex.digest, s.output)
            found = [j for j, (v, o) in enumerate(inputs) if (v.digest, o) == key]
            if found:
                remap[i] = found[0]
            else:
                inputs.append((s.vertex, s.output))
                remap[i] = len(inputs) - 1
        fixed = tuple(
            ops.replace(a, copy=ops.replace(a.copy, src=remap[a.copy.src])) if a.copy is not None else a
            for a in actions)
        v = vertex("file", ops.FileOp(actions=fixed, base=-1 if on_scratch else 0), inputs, meta or self.meta)
        return self._next(v)

    def copy(self, src: "State", src_path: str, dest: str, *, meta: ops.OpMetadata | None = None,
             link: bool = False, **options) -> "State":
        """Copy ``src_path`` of ``src`` to ``dest``; ``link=True`` copies onto scratch and merges
        the result on top, so changes below do not invalidate the copy (``COPY --link``)."""
        copy = ops.CopyAction(src=0, src_path=src_path, dest=dest, **options)
        action = ops.FileAction(copy=ops.replace(copy, src_path=normal.src_path(copy)))  # "a" is "/a"
        if link:
            layer = self.file([action], [src], meta=meta, on_scratch=True)
            return self.merge([layer], meta=meta)
        return self.file([action], [src], meta=meta)

    def mkfile(self, path: str, data: bytes, mode: int = 0o644, **kw) -> "State":
        return self.file([ops.FileAction(mkfile=ops.MkfileAction(path, data, mode, **kw))])

    def mkdir(self, path: str, mode: int = 0o755, parents: bool = True, **kw) -> "State":
        return self.file([ops.FileAction(mkdir=ops.MkdirAction(path, mode, parents, **kw))])

    def rm(self, path: str, allow_not_found: bool = False, allow_wildcard: bool = False) -> "State":
        return self.file([ops.FileAction(rm=ops.RmAction(path, allow_not_found, allow_wildcard))])

    def symlink(self, target: str, path: str, **kw) -> "State":
        return self.file([ops.FileAction(symlink=ops.SymlinkAction(target, path, **kw))])

    def merge(self, others: Sequence["State"], *, meta: ops.OpMetadata | None = None) -> "State":
        """This filesystem with ``others`` layered on top, later ones winning."""
        v = vertex("merge", ops.MergeOp(), [(s.vertex, s.output) for s in (self, *others)], meta or self.meta)
        return self._next(v)

    def diff(self, upper: "State", *, meta: ops.OpMetadata | None = None) -> "State":
        """What ``upper`` changes relative to this state."""
        v = vertex("diff", ops.DiffOp(), [(self.vertex, self.output), (upper.vertex, upper.output)], meta or self.meta)
        return self._next(v)

    def with_image(self, config: ops.ImageConfig, history: Sequence[ops.HistoryEntry] = (),
                   platform: ops.Platform | None = None, meta: ops.OpMetadata | None = None) -> "State":
        """Attach an image config: the result is what an exporter writes as an image."""
        body = ops.ImageOp(config=config, history=tuple(history), platform=platform or ops.Platform())
        return self._next(vertex("image", body, [(self.vertex, self.output)], meta or self.meta))


# --------------------------------------------------------------------------- sources


def _source(meta: ops.OpMetadata | None = None, **kind) -> State:
    return State(vertex("source", ops.SourceOp(**kind), (), meta))


def scratch() -> State:
    return _source(scratch=ops.ScratchSource())


def image(ref: str, digest: str = "", platform: ops.Platform | None = None, meta=None) -> State:
    return _source(meta, image=ops.ImageSource(ref, digest, platform or ops.Platform()))


def local(name: str = "context", include: Sequence[str] = (), exclude: Sequence[str] = (), meta=None) -> State:
    return _source(meta, local=ops.LocalSource(name, tuple(include), tuple(exclude)))


def http(url: str, checksum: str = "", filename: str = "", mode: int = 0o644, meta=None) -> State:
    return _source(meta, http=ops.HTTPSource(url, checksum, filename, mode))


def git(remote: str, ref: str = "", keep_git_dir: bool = False, subdir: str = "", meta=None) -> State:
    return _source(meta, git=ops.GitSource(remote, ref, keep_git_dir, subdir))


def oci_layout(name: str, ref: str = "", digest: str = "", platform: ops.Platform | None = None, meta=None) -> State:
    return _source(meta, oci_layout=ops.OCILayoutSource(name, ref, digest, platform or ops.Platform()))


# --------------------------------------------------------------------------- documents


def build_document(targets: dict[str, State], sources: Sequence[ops.SourceFile] = ()) -> ops.Document:
    """Collect every vertex reachable from ``targets`` into a document; identical ops merge."""
    op_map: dict[str, ops.Op] = {}
    metadata: dict[str, ops.OpMetadata] = {}
    stack = [s.vertex for s in targets.values()]
    while stack:
        v = stack.pop()
        if v.digest in op_map:
            if v.meta is not None and v.digest in metadata:
                metadata[v.digest] = _merge_meta(metadata[v.digest], v.meta)
            elif v.meta is not None:
                metadata[v.digest] = v.meta
            continue
        op_map[v.digest] = v.op
        if v.meta is not None and v.meta != ops.OpMetadata():
            metadata[v.digest] = v.meta
        stack.extend(v.inputs)
    roots = {name: ops.Ref(s.vertex.digest, s.output) for name, s in targets.items()}
    return ops.Document(version=1, ops=op_map, roots=roots, features=features.used_by(op_map),
                        metadata=metadata, sources=tuple(sources))


def _merge_meta(a: ops.OpMetadata, b: ops.OpMetadata) -> ops.OpMetadata:
    locs = a.locations + tuple(loc for loc in b.locations if loc not in a.locations)
    return ops.replace(a, description=a.description or b.description, group=a.group or b.group,
                       locations=locs)
