"""The normal form (``ir.normal``, ``spec/ir.md`` § 4 rule 9): one meaning, one encoding, and a
refusal that names the normal form; plus the messages that tell digests and op kinds apart."""

from __future__ import annotations

import copy

import msgpack
import pytest

from ir import builder as b
from ir import codec, jsonform, normal, ops, validate
from ir.errors import DecodeError
from tests.ir.strategies import D1

BASE = b.image("docker.io/library/busybox:1.36", digest=D1)
ROOT = ops.Mount("/", input=0, output=0)


def exec_doc(**kw) -> ops.Document:
    body = dict(args=("true",), mounts=(ROOT,))
    body.update(kw)
    return b.build_document({"default": BASE._next(b.vertex("exec", ops.ExecOp(**body), [(BASE.vertex, 0)]))})


def file_doc(action: ops.FileAction) -> ops.Document:
    return b.build_document({"default": BASE._next(b.vertex("file", ops.FileOp((action,)), [(BASE.vertex, 0)]))})


def problems(doc: ops.Document) -> list[str]:
    return [f"{e.path.split('.', 1)[1]}: {e.message}" for e in validate.check_graph(doc)]


def mounted(*mounts: ops.Mount) -> ops.Document:
    return exec_doc(mounts=(ROOT, *mounts))


T = ops.TmpfsOptions()

REFUSED = [
    (file_doc(ops.FileAction(copy=ops.CopyAction(0, "hello.txt", "/hello.txt"))),
     "file.actions[0].copy.src_path: path 'hello.txt' is not in normal form (normal form: '/hello.txt')"),
    (file_doc(ops.FileAction(copy=ops.CopyAction(0, "/src/", "/x"))),
     "file.actions[0].copy.src_path: path '/src/' is not in normal form (normal form: '/src')"),
    (file_doc(ops.FileAction(copy=ops.CopyAction(0, "/a//b/./c", "/x"))),
     "file.actions[0].copy.src_path: path '/a//b/./c' is not in normal form (normal form: '/a/b/c')"),
    (file_doc(ops.FileAction(copy=ops.CopyAction(0, "/a", "/x//y/")))
     , "file.actions[0].copy.dest: path '/x//y/' is not in normal form (normal form: '/x/y/')"),
    (file_doc(ops.FileAction(copy=ops.CopyAction(0, "/a", "/a", chmod="644"))),
     "file.actions[0].copy.chmod: an octal chmod has four digits (normal form: '0644')"),
    (file_doc(ops.FileAction(copy=ops.CopyAction(0, "/a", "/a", chmod="00644"))),
     "file.actions[0].copy.chmod: invalid chmod '00644'"),
    (file_doc(ops.FileAction(mkfile=ops.MkfileAction("/f/"))),
     "file.actions[0].mkfile.path: path '/f/' is not in normal form (normal form: '/f')"),
    (file_doc(ops.FileAction(rm=ops.RmAction("/f/"))),
     "file.actions[0].rm.path: path '/f/' is not in normal form (normal form: '/f')"),
    (file_doc(ops.FileAction(symlink=ops.SymlinkAction("x", "/l/"))),
     "file.actions[0].symlink.path: path '/l/' is not in normal form (normal form: '/l')"),
    (file_doc(ops.FileAction(mkfile=ops.MkfileAction("/f", owner=ops.Owner()))),
     "file.actions[0].mkfile.owner: an owner with neither user nor group is 0:0, which is what an absent owner "
     "means (normal form: absent)"),
    (file_doc(ops.FileAction(symlink=ops.SymlinkAction("x", "/l", owner=ops.Owner()))),
     "file.actions[0].symlink.owner: an owner with neither user nor group is 0:0, which is what an absent owner "
     "means (normal form: absent)"),
    (exec_doc(cwd="/a/../b"), "exec.cwd: path '/a/../b' is not in normal form (normal form: '/b')"),
    (exec_doc(cwd="//srv"), "exec.cwd: path '//srv' is not in normal form (normal form: '/srv')"),
    (mounted(ops.Mount("/t/", "tmpfs", tmpfs=T)),
     "exec.mounts[1].target: path '/t/' is not in normal form (normal form: '/t')"),
    (mounted(ops.Mount("/src", input=0, selector="sub")),
     "exec.mounts[1].selector: path 'sub' is not in normal form (normal form: '/sub')"),
    (mounted(ops.Mount("/src", input=0, selector="/")),
     "exec.mounts[1].selector: selector '/' selects the input's root (normal form: absent)"),
    (mounted(ops.Mount("/t", "tmpfs")),
     "exec.mounts[1]: a tmpfs mount writes its 'tmpfs' options, {} when all are defaults (normal form: present)"),
    (mounted(ops.Mount("/s", "ssh")),
     "exec.mounts[1]: an ssh mount writes its 'ssh' options, {} when all are defaults (normal form: present)"),
    (mounted(ops.Mount("/c", "cache", cache=ops.CacheOptions(""))),
     "exec.mounts[1].cache.id: the cache id is required and must not be empty (normal form: a non-empty string)"),
    (mounted(ops.Mount("/s", "secret", secret=ops.SecretOptions(""))),
     "exec.mounts[1].secret.id: the secret id is required and must not be empty (normal form: a non-empty string)"),
    (mounted(ops.Mount("/s", "ssh", ssh=ops.SSHOptions(""))),
     "exec.mounts[1].ssh.id: the ssh id must not be empty (normal form: absent, which means 'default')"),
    (b.build_document({"default": b.git("https://example.com/r.git", subdir="./")}),
     "source.git.subdir: subdir './' is the whole checkout (normal form: absent)"),
    (b.build_document({"default": b.git("https://example.com/r.git", subdir="a//b/")}),
     "source.git.subdir: subdir 'a//b/' is not in normal form (normal form: 'a/b')"),
    (b.build_document({"default": b.git("")}), "source.git.remote: a git remote must not be empty"),
    (b.build_document({"default": b.oci_layout("")}), "source.oci_layout.name: an OCI layout name must not be empty"),
]


@pytest.mark.parametrize("doc, message", REFUSED, ids=[m.split(":")[0] + f"#{i}" for i, (_, m) in enumerate(REFUSED)])
def test_a_value_not_in_normal_form_is_refused_naming_the_normal_form(doc: ops.Document, message: str) -> None:
    assert problems(doc) == [message]


ACCEPTED = [
    file_doc(ops.FileAction(copy=ops.CopyAction(0, "/", "/"))),
    file_doc(ops.FileAction(copy=ops.CopyAction(0, "/src/*.go", "/app/", chmod="0755"))),
    file_doc(ops.FileAction(copy=ops.CopyAction(0, "/a", "/a", chmod="u+x,g-w"))),
    file_doc(ops.FileAction(copy=ops.CopyAction(0, "/pivot/./a/b", "/d/", parents=True))),
    exec_doc(cwd="/srv"),
    file_doc(ops.FileAction(copy=ops.CopyAction(0, "/a", "/a", owner=ops.Owner()))),  # 0:0, not "keep"
    file_doc(ops.FileAction(mkdir=ops.MkdirAction("/d", owner=ops.Owner("0")))),
    mounted(ops.Mount("/t", "tmpfs", tmpfs=T), ops.Mount("/s", "ssh", ssh=ops.SSHOptions()),
            ops.Mount("/src", input=0, selector="/sub"), ops.Mount("/c", "cache", cache=ops.CacheOptions("/c"))),
    b.build_document({"default": b.git("https://example.com/r.git", subdir="a/b")}),
]


@pytest.mark.parametrize("doc", ACCEPTED)
def test_values_in_normal_form_are_accepted(doc: ops.Document) -> None:
    assert problems(doc) == []


def test_the_parents_pivot_is_kept_and_the_rest_normalised() -> None:
    doc = file_doc(ops.FileAction(copy=ops.CopyAction(0, "/pivot/./a//b", "/d/", parents=True)))
    assert problems(doc) == ["file.actions[0].copy.src_path: path '/pivot/./a//b' is not in normal form "
                             "(normal form: '/pivot/./a/b')"]
    # without `parents`, `/./` is an ordinary (non-normal) component
    doc = file_doc(ops.FileAction(copy=ops.CopyAction(0, "/pivot/./a", "/d/")))
    assert problems(doc) == ["file.actions[0].copy.src_path: path '/pivot/./a' is not in normal form "
                             "(normal form: '/pivot/a')"]


@pytest.mark.parametrize("path, normal_form", [("/", "/"), ("a", "/a"), ("/a/", "/a"), ("//a", "/a"), ("/a/./b", "/a/b"),
                                               ("/a/b/..", "/a"), ("", "/"), ("/é x", "/é x")])
def test_abs_path(path: str, normal_form: str) -> None:
    assert normal.abs_path(path) == normal_form


def test_the_builders_mounts_are_in_normal_form() -> None:
    """What the frontends emit through the builder: tmpfs and ssh options always present."""
    st = BASE.run(["true"], mounts=[b.tmpfs("/tmp"), b.ssh(), b.cache("/c"), b.secret("s")])
    assert problems(b.build_document({"default": st})) == []


# --------------------------------------------------------------------------- messages


def _hello_json() -> tuple[dict, str, str]:
    st = BASE.run(["true"]).with_image(ops.ImageConfig())
    value = jsonform.to_json(b.build_document({"default": st}))
    exec_digest = next(d for d, op in value["ops"].items() if "exec" in op)
    return value, exec_digest, value["roots"]["default"]["op"]


def test_a_wrong_digest_shows_both_digests_whole() -> None:
    value, exec_digest, _ = _hello_json()
    value["ops"][exec_digest]["exec"]["args"] = ["false"]
    with pytest.raises(DecodeError) as info:
        jsonform.document_from_json(value)
    content = codec.digest_bytes(codec.canonical_bytes(ops.Op(
        inputs=(ops.Ref(BASE.vertex.digest),), exec=ops.ExecOp(("false",), (ROOT,)))))
    assert info.value.message == ("op is stored under a digest that does not match its content: "
                                  f"stored {exec_digest}, content {content}")


def test_a_reference_that_differs_from_an_op_only_after_the_short_prefix_shows_both_whole() -> None:
    value, _, image_digest = _hello_json()
    near = image_digest[:-1] + ("0" if image_digest[-1] != "0" else "1")
    value["roots"]["default"]["op"] = near
    errors = validate.check_graph(jsonform.document_from_json(value))
    assert [(e.path, e.message) for e in errors] == [
        ("roots.default.op", f"refers to op {near} which is not in the document (an op with the same prefix is "
                             f"{image_digest})")]
    value["roots"]["default"]["op"] = "sha256:" + "0" * 64  # nothing alike: the short form is enough
    assert [e.message for e in validate.check_graph(jsonform.document_from_json(value))] == [
        "refers to op sha256:000000000000… which is not in the document"]


@pytest.mark.parametrize("edit, message", [
    (lambda op: op.update(run=op.pop("exec")), "unknown op kind 'run'; the op kinds are source, exec, file, "
                                               "merge, diff, image"),
    (lambda op: op.update(exex=op.pop("exec")), "unknown op kind 'exex' (did you mean 'exec'?); the op kinds "
                                                "are source, exec, file, merge, diff, image"),
])
def test_an_unknown_op_kind_names_the_op_kinds(edit, message: str) -> None:
    value, exec_digest, _ = _hello_json()
    edit(value["ops"][exec_digest])
    value["ops"][exec_digest] = dict(sorted(value["ops"][exec_digest].items()))
    with pytest.raises(DecodeError) as info:
        jsonform.document_from_json(value)
    assert info.value.path.startswith("ops[sha256:") and info.value.message == message
    # the binary reader (fast path, then the strict decoder for the message) says the same
    raw = copy.deepcopy(value)
    with pytest.raises(DecodeError) as info2:
        validate.load_and_validate(_file_of(raw))
    assert info2.value.message == message


def test_an_unknown_source_kind_and_file_action_name_theirs() -> None:
    value = jsonform.to_json(b.build_document({"default": BASE.mkdir("/d")}))
    src = next(op for op in value["ops"].values() if "source" in op)
    src["source"] = {"docker": src["source"].pop("image")}
    with pytest.raises(DecodeError, match=r"unknown source kind 'docker'; the source kinds are image, local, http, "
                                          r"git, oci_layout, scratch"):
        jsonform.document_from_json(value)
    value = jsonform.to_json(b.build_document({"default": BASE.mkdir("/d")}))
    fop = next(op for op in value["ops"].values() if "file" in op)
    fop["file"]["actions"][0] = {"mv": {"path": "/d"}}
    with pytest.raises(DecodeError, match=r"unknown file action 'mv'; the file actions are copy, mkfile, mkdir, rm, "
                                          r"symlink"):
        jsonform.document_from_json(value)


def _file_of(value: dict) -> bytes:
    """The binary IR file of a JSON-form document, without checking it (digests may be stale)."""
    raw = jsonform.from_json(ops.Document, value)
    return codec.HEADER.pack(codec.MAGIC, codec.VERSION, codec.COMPRESSION_NONE, 0) + msgpack.packb(raw, use_bin_type=True)


def test_the_builder_writes_copy_sources_and_selectors_in_normal_form() -> None:
    """``ir.builder`` is the in-process writer: given another spelling it writes the normal one, so
    `copy(ctx, "a", …)` and `copy(ctx, "/a", …)` are one op (and an escape is left for the check)."""
    ctx = b.local()
    assert BASE.copy(ctx, "a/./b/", "/x").vertex.digest == BASE.copy(ctx, "/a/b", "/x").vertex.digest
    assert BASE.copy(ctx, "p/./q", "/x/", parents=True).vertex.op.file.actions[0].copy.src_path == "/p/./q"
    assert BASE.copy(ctx, "../x", "/x").vertex.op.file.actions[0].copy.src_path == "../x"
    assert [b.bind("/m", ctx, s).mount.selector for s in ("sub/", "/", "", "../up")] == ["/sub", "", "", "../up"]
    assert b.cache("/c", selector="deps").mount.selector == "/deps"
