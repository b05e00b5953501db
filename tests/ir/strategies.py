"""Hypothesis strategies for random valid IR graphs, built through ``ir.builder`` (every op kind,
every mount type, every file action), plus a few hand-made fixtures shared by the tests."""

from __future__ import annotations

from hypothesis import strategies as st

from ir import builder as b
from ir import ops

D1 = "sha256:7b3ccabffc97de872a30dfd234fd972a66d247c8cfc69b0550f276481852627c"

names = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x2FF, exclude_characters="/=\\"), min_size=1, max_size=8)
texts = st.text(max_size=12)
abs_paths = st.lists(st.sampled_from(["a", "bin", "etc", "é", "x y", "long-" + "n" * 40]), min_size=1, max_size=3).map(
    lambda parts: "/" + "/".join(parts))
modes = st.integers(0, 0o7777)
ints = st.one_of(st.integers(0, 300), st.integers(-(2 ** 63), 2 ** 64 - 1))
owners = st.one_of(st.none(), st.builds(ops.Owner, st.sampled_from(["", "0", "app", "1000"]), st.sampled_from(["", "0", "app"])))
made_owners = owners.filter(lambda o: o != ops.Owner())  # mkfile, mkdir, symlink: 0:0 is written absent
platforms = st.builds(ops.Platform, st.sampled_from(["linux", "windows"]), st.sampled_from(["amd64", "arm64"]),
                      st.sampled_from(["", "v8"]))


@st.composite
def sources(draw) -> b.State:
    kind = draw(st.sampled_from(["image", "local", "http", "git", "oci_layout", "scratch"]))
    if kind == "image":
        return b.image(draw(st.sampled_from(["busybox:1.36", "127.0.0.1:5000/app:latest"])),
                       draw(st.sampled_from(["", D1])), draw(platforms))
    if kind == "local":
        return b.local(draw(names), draw(st.lists(texts, max_size=2)), draw(st.lists(texts, max_size=2)))
    if kind == "http":
        return b.http("https://example.com/" + draw(names), draw(st.sampled_from(["", D1])),
                      draw(st.sampled_from(["", "f.tgz"])), draw(modes))
    if kind == "git":
        return b.git("https://example.com/r.git", draw(texts), draw(st.booleans()), draw(st.sampled_from(["", "sub/dir"])))
    if kind == "oci_layout":
        return b.oci_layout(draw(names), draw(texts), draw(st.sampled_from(["", D1])), draw(platforms))
    return b.scratch()


def _mount(draw, pool: list[b.State], i: int) -> b.RunMount:
    target = f"/m{i}"
    kind = draw(st.sampled_from(["bind", "bind-out", "cache", "tmpfs", "secret", "ssh"]))
    if kind == "bind":
        return b.bind(target, draw(st.sampled_from(pool)), draw(st.sampled_from(["", "/sub"])), draw(st.booleans()))
    if kind == "bind-out":
        return b.bind(target, draw(st.sampled_from(pool)), readonly=False, output=True)
    if kind == "cache":
        return b.cache(target, draw(names), draw(st.sampled_from(["shared", "private", "locked"])),
                       seed=draw(st.one_of(st.none(), st.sampled_from(pool))), mode=draw(modes))
    if kind == "tmpfs":
        return b.tmpfs(target, draw(st.integers(0, 2 ** 40)))
    if kind == "secret":
        return b.secret(draw(names), target, required=draw(st.booleans()), mode=draw(modes))
    return b.ssh(target, draw(names), required=draw(st.booleans()))


def _action(draw, n_sources: int) -> ops.FileAction:
    kind = draw(st.sampled_from(["copy", "mkfile", "mkdir", "rm", "symlink"]))
    if kind == "copy":
        return ops.FileAction(copy=ops.CopyAction(
            draw(st.integers(0, n_sources - 1)), draw(st.sampled_from(["/a", "/src/*.c", "/é"])), draw(abs_paths),
            draw(owners), draw(st.sampled_from(["", "0755", "u+x"])), draw(st.booleans()), draw(st.booleans()),
            draw(st.booleans()), draw(st.booleans()), draw(st.booleans()), tuple(draw(st.lists(texts, max_size=2))),
            (), draw(st.booleans()), draw(st.booleans()), draw(st.sampled_from([-1, 0, 1700000000, 2 ** 40]))))
    if kind == "mkfile":
        return ops.FileAction(mkfile=ops.MkfileAction(draw(abs_paths), draw(st.binary(max_size=300)), draw(modes),
                                                      draw(made_owners), draw(st.sampled_from([-1, 0, 2 ** 33]))))
    if kind == "mkdir":
        return ops.FileAction(mkdir=ops.MkdirAction(draw(abs_paths), draw(modes), draw(st.booleans()), draw(made_owners)))
    if kind == "rm":
        return ops.FileAction(rm=ops.RmAction(draw(abs_paths), draw(st.booleans()), draw(st.booleans())))
    return ops.FileAction(symlink=ops.SymlinkAction(draw(texts), draw(abs_paths), draw(made_owners)))


@st.composite
def states(draw, max_steps: int = 8) -> b.State:
    """A state at the end of a random chain of ops of every kind."""
    pool = [draw(sources()) for _ in range(draw(st.integers(1, 3)))]
    for step in range(draw(st.integers(0, max_steps))):
        cur = draw(st.sampled_from(pool))
        if draw(st.booleans()):
            loc = ops.Location(0, draw(st.integers(1, 500)), draw(st.integers(0, 80)))
            cur = cur.with_meta(draw(texts), draw(st.sampled_from(["", "build", "é"])), [loc])
        kind = draw(st.sampled_from(["exec", "file", "merge", "diff", "image"]))
        if kind == "exec":
            mounts = [_mount(draw, pool, i) for i in range(draw(st.integers(0, 4)))]
            outs = cur.with_envs(draw(st.lists(names.map(lambda n: n + "=v"), max_size=2))).run_outputs(
                draw(st.lists(texts, min_size=1, max_size=3)), mounts=mounts, cwd=draw(st.sampled_from(["/", "/src"])),
                user=draw(st.sampled_from(["", "1000:1000"])), hostname=draw(st.sampled_from(["", "h"])),
                network=draw(st.sampled_from(["default", "none", "host"])),
                security=draw(st.sampled_from(["sandbox", "insecure"])))
            pool += outs
        elif kind == "file":
            srcs = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=2))
            pool.append(cur.file([_action(draw, len(srcs)) for _ in range(draw(st.integers(1, 3)))], srcs,
                                 on_scratch=draw(st.booleans())))
        elif kind == "merge":
            pool.append(cur.merge(draw(st.lists(st.sampled_from(pool), max_size=2))))
        elif kind == "diff":
            pool.append(cur.diff(draw(st.sampled_from(pool))))
        else:
            cfg = ops.ImageConfig(
                env=tuple(draw(st.lists(names.map(lambda n: n + "=1"), max_size=2))),
                cmd=tuple(draw(st.lists(texts, max_size=2))), working_dir=draw(st.sampled_from(["", "/app"])),
                labels=draw(st.dictionaries(texts, texts, max_size=3)),
                exposed_ports=tuple(draw(st.lists(st.sampled_from(["80/tcp", "443/tcp", "53/udp"]), max_size=3))),
                healthcheck=draw(st.one_of(st.none(), st.builds(ops.Healthcheck, st.just(("CMD", "true")),
                                                                st.integers(0, 2 ** 63 - 1)))))
            pool.append(cur.with_image(cfg, [ops.HistoryEntry(draw(texts), empty_layer=draw(st.booleans()))],
                                       draw(platforms)))
    return pool[-1]


@st.composite
def documents(draw) -> ops.Document:
    roots = {name: draw(states()) for name in draw(st.lists(st.sampled_from(["default", "test", "é"]), min_size=1,
                                                            max_size=2, unique=True))}
    srcs = [ops.SourceFile("Dockerfile", "dockerfile", draw(st.binary(max_size=40)))]
    return b.build_document(roots, srcs)
