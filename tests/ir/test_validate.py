"""Graph checks on hand-built typed documents (what a frontend could build in-process)."""

from __future__ import annotations

import pytest

from ir import builder as b
from ir import ops, validate
from ir.errors import ValidationError, ValidationErrors
from tests.ir.strategies import D1

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64


def exec_op(*inputs: str) -> ops.Op:
    return ops.Op(inputs=tuple(ops.Ref(d) for d in inputs),
                  exec=ops.ExecOp(args=("true",), mounts=(ops.Mount("/", input=0, output=0),)))


def messages(doc: ops.Document) -> list[str]:
    return [str(e) for e in validate.check_graph(doc)]


def test_cycle_is_found_and_named() -> None:
    doc = ops.Document(1, {A: exec_op(B), B: exec_op(C), C: exec_op(A)}, {"default": ops.Ref(A)}, ("exec",))
    assert messages(doc) == [f"ops[{A[:19]}…]: the graph has a cycle through this op"]


def test_self_loop() -> None:
    doc = ops.Document(1, {A: exec_op(A)}, {"default": ops.Ref(A)}, ("exec",))
    assert messages(doc) == [f"ops[{A[:19]}…]: the graph has a cycle through this op"]


def test_dangling_input_and_all_errors_reported_together() -> None:
    doc = ops.Document(1, {A: exec_op(B)}, {"default": ops.Ref(A, 3), "x": ops.Ref(C)})
    assert messages(doc) == [
        f"ops[{A[:19]}…].inputs[0].op: refers to op {B[:19]}… which is not in the document",
        f"roots.default.output: output 3 out of range: that op has 1 output(s)",
        f"roots.x.op: refers to op {C[:19]}… which is not in the document",
        "features: feature 'exec' is used but not declared",
    ]
    with pytest.raises(ValidationErrors) as info:
        validate.validate_document(doc)
    assert len(info.value.errors) == 4 and str(info.value).count("\n") == 3


def test_one_error_is_a_plain_validation_error() -> None:
    doc = ops.Document(1, {A: ops.Op(merge=ops.MergeOp())}, {"default": ops.Ref(A)}, ("merge",))
    with pytest.raises(ValidationError) as info:
        validate.validate_document(doc)
    assert not isinstance(info.value, ValidationErrors)
    assert str(info.value) == f"ops[{A[:19]}…].inputs: a merge op takes at least 1 input(s), has 0"


def test_builder_graphs_are_valid() -> None:
    ctx = b.local()
    st = (b.image("busybox", digest=D1).with_env("A", "1").with_mount(b.cache("/c"))
          .run(["make"], mounts=[b.bind("/src", ctx), b.secret("s"), b.ssh(), b.tmpfs("/tmp")])
          .copy(ctx, "/a", "/a", link=True).mkdir("/d").mkfile("/d/f", b"x").symlink("f", "/d/l").rm("/d/l"))
    doc = b.build_document({"default": st.with_image(ops.ImageConfig())})
    validate.validate_document(doc)


@pytest.mark.parametrize("path, ok", [("/", True), ("/a", True), ("/a/", True), ("//a", False), ("/a/../b", False),
                                      ("/a/./b", False), ("/a//b", False), ("a", False), ("", False)])
def test_clean_abs(path: str, ok: bool) -> None:
    assert validate.clean_abs(path) is ok


@pytest.mark.parametrize("path, ok", [("a", True), ("/a/b", True), ("", True), ("..", False), ("a/../../b", False),
                                      ("a/..", False)])
def test_clean_rel(path: str, ok: bool) -> None:
    assert validate.clean_rel(path) is ok


def test_many_dangling_refs_cost_linear_time() -> None:
    """The "same prefix" hint of a dangling ref looks the prefix up once per graph: a hostile graph of
    n ops and n dangling refs took n² prefix comparisons (8,000 of each: 15 s) before."""
    import time

    from ir.codec import op_digest

    n = 10_000
    sources = [ops.Op(source=ops.SourceOp(local=ops.LocalSource(name=f"c{i}"))) for i in range(n)]
    merge = ops.Op(merge=ops.MergeOp(), inputs=tuple(ops.Ref(op=f"sha256:{i:064x}") for i in range(n)))
    doc = ops.Document(version=1, ops={op_digest(o): o for o in [*sources, merge]},
                       roots={"default": ops.Ref(op=op_digest(merge))})
    t0 = time.monotonic()
    errors = validate.check_graph(doc)
    assert time.monotonic() - t0 < 3
    assert sum("which is not in the document" in str(e) for e in errors) == n


def test_check_op_applies_a_graphs_per_op_checks_to_one_op_alone() -> None:
    """A worker receives one op without its graph: inputs need not resolve, but the op's own rules,
    its input count and each mount's input index are checked as a graph reader checks them."""
    assert validate.check_op(exec_op(B)) == []
    bad = ops.Op(inputs=(ops.Ref(B),), exec=ops.ExecOp(args=(), cwd="rel", mounts=(
        ops.Mount("/", input=0, output=0), ops.Mount("/src", input=1), ops.Mount("/o", input=0, output=2))))
    path = validate.op_path(validate.codec.op_digest(bad))
    assert [str(e) for e in validate.check_op(bad)] == [
        f"{path}.exec.mounts: mount outputs must be numbered 0..n-1 without gaps or repeats, got [0, 2]",
        f"{path}.exec.args: args must not be empty",
        f"{path}.exec.cwd: cwd must be an absolute path",
        f"{path}.exec.mounts[1].input: input 1 out of range (1 inputs)",
    ]
    alone = ops.Op(exec=exec_op(B).exec)
    path = validate.op_path(validate.codec.op_digest(alone))
    assert [str(e) for e in validate.check_op(alone)] == [
        f"{path}.inputs: an exec op takes at least 1 input(s), has 0",
        f"{path}.exec.mounts[0].input: input 0 out of range (0 inputs)"]


@pytest.mark.parametrize("hostname, ok", [("", True), ("buildkitsandbox", True), ("a.b-c_d", True),
                                          ("a\n6.6.6.6 bank.example", False), ("a b", False), ("x" * 254, False)])
def test_a_hostname_is_one_token(hostname: str, ok: bool) -> None:
    """It is written into the step's /etc/hosts and /etc/hostname: a newline would add a line."""
    op = exec_op(B)
    op = ops.Op(inputs=op.inputs, exec=ops.replace(op.exec, hostname=hostname))
    found = [str(e) for e in validate.check_op(op)]
    assert (found == []) == ok, found
    assert ok or "hostname" in found[0]


@pytest.mark.parametrize("kind", ["cache", "secret", "ssh"])
@pytest.mark.parametrize("uid, gid, ok", [(0, 0, True), (ops.MAX_ID, ops.MAX_ID, True), (1 << 40, 0, False),
                                          (0, (1 << 32) - 1, False), (-1, 0, False)])
def test_a_mount_owner_is_an_id_a_file_can_have(kind: str, uid: int, gid: int, ok: bool) -> None:
    options = {"cache": ops.CacheOptions("/x", uid=uid, gid=gid), "secret": ops.SecretOptions("s", uid=uid, gid=gid),
               "ssh": ops.SSHOptions(uid=uid, gid=gid)}[kind]
    mount = ops.Mount("/x", type=kind, input=-1, **{kind: options})
    op = ops.Op(inputs=(ops.Ref(B),), exec=ops.ExecOp(args=("true",), mounts=(ops.Mount("/", input=0, output=0), mount)))
    found = [str(e) for e in validate.check_op(op)]
    assert (found == []) == ok, found
    assert ok or "out of range" in found[0]
