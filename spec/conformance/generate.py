"""Write the conformance documents (``valid/*.json``, ``invalid/*.json``) in the JSON form.

    python spec/conformance/generate.py          # write the files, print the observed verdicts

Valid documents are built with ``ir.builder``.  Invalid ones are a valid document with one thing
broken: built with the builder when the break is a graph rule (so the digests still verify and the
graph check is what fails), or edited as JSON when the break is in the encoding.  The expected key
path and message of each invalid case live in ``README.md``, written and reviewed by hand; this
script only prints what irctl reports, to help write them.  ``tests/ir/test_conformance.py`` runs
every case.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ir import builder as b  # noqa: E402
from ir import jsonform, ops  # noqa: E402

HERE = Path(__file__).resolve().parent
D1 = "sha256:7b3ccabffc97de872a30dfd234fd972a66d247c8cfc69b0550f276481852627c"
T = ops.TmpfsOptions()  # a tmpfs mount writes its options, {} when all are defaults (normal form)
SRC = ops.SourceFile("Dockerfile", "dockerfile", b"FROM busybox:1.36\nRUN echo hello > /hello\n")


def busybox() -> b.State:
    return b.image("docker.io/library/busybox:1.36", digest=D1)


def hello() -> ops.Document:
    st = busybox().with_meta("[1/2] RUN echo hello", "build", [ops.Location(0, 2)]).run(
        ["/bin/sh", "-c", "echo hello > /hello"], env=["PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
    return b.build_document({"default": st.with_image(ops.ImageConfig(cmd=("cat", "/hello")))}, [SRC])


def valid() -> dict[str, ops.Document]:
    ctx = b.local("context")
    base = busybox()
    outs = base.run_outputs(["sh", "-c", "make && cp app /out/"], mounts=[
        b.bind("/src", ctx), b.bind("/out", b.scratch(), readonly=False, output=True),
        b.cache("/root/.cache", "build-cache", "private"), b.tmpfs("/tmp"), b.secret("token", required=True),
        b.ssh()], network="none")
    layer = base.file([ops.FileAction(copy=ops.CopyAction(0, "/app", "/usr/local/bin/", chmod="0755"))], [outs[1]],
                      on_scratch=True)
    linked = base.merge([layer])
    every = {
        "default": linked.with_image(ops.ImageConfig(entrypoint=("/usr/local/bin/app",), labels={"é": "1", "a": "2"})),
        "diff": base.diff(outs[0]),
        "http": b.http("https://example.com/x.tar.gz", "sha256:" + "1" * 64).mkdir("/opt/x")
                 .symlink("/opt/x", "/x").rm("/tmp", allow_not_found=True)
                 .mkfile("/etc/motd", "héllo\n".encode(), 0o644, timestamp=0),
        "git": b.git("https://github.com/moby/buildkit.git", "v0.13.0", subdir="frontend"),
        "layout": b.oci_layout("layout", "v1").run(["true"], network="host", security="insecure"),
    }
    unreachable = hello()
    extra = busybox().run(["true"])
    unreachable = ops.Document(1, {**unreachable.ops, extra.vertex.digest: extra.vertex.op}, unreachable.roots,
                               tuple(sorted(set(unreachable.features) | {"exec"})), unreachable.metadata,
                               unreachable.sources)
    return {
        **answered_gaps(),
        "scratch": b.build_document({"default": b.scratch()}),
        "busybox-hello": hello(),
        "every-kind": b.build_document(every),
        "exec-outputs": b.build_document({"default": outs[0], "out": outs[1]}),
        "exec-sandbox": b.build_document({"default": base.run(
            ["true"], extra_hosts=(ops.HostIP("db.internal", "10.0.0.7"), ops.HostIP("db6", "fd00::7")),
            shm_size=128 << 20, ulimits=(ops.Ulimit("core", 0, 0), ops.Ulimit("nofile", 1024, 4096)))}),
        "unreachable-op": unreachable,
    }


def answered_gaps() -> dict[str, ops.Document]:
    """Valid documents whose *meaning* ``spec/ir.md`` pins down beyond validity (the README's second
    table says what a reader does with each)."""
    base = busybox()
    base_history = (ops.HistoryEntry('/bin/sh -c #(nop) ADD file:d0ab… in / ', created="2024-01-01T00:00:00Z"),
                    ops.HistoryEntry('/bin/sh -c #(nop)  CMD ["sh"]', created="2024-01-01T00:00:01Z",
                                     empty_layer=True))
    ran = base.run(["/bin/sh", "-c", "echo hi > /hi"], env=["PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
    run_entry = ops.HistoryEntry("RUN /bin/sh -c echo hi > /hi # buildkit", "buildkit.dockerfile.v0")
    index = b.image("docker.io/library/busybox:1.36",
                    digest="sha256:" + "9" * 64, platform=ops.Platform("linux", "arm64", "v8"))
    return {
        "exec-empty-env": b.build_document({"default": base.run(["/bin/busybox", "env"])}),
        "exec-cwd-created": b.build_document({"default": base.run(["/bin/busybox", "touch", "f"], cwd="/work/new",
                                                                   user="1000:1000")}),
        "image-base-history": b.build_document({"default": ran.with_image(
            ops.ImageConfig(env=("PATH=/usr/sbin:/usr/bin:/sbin:/bin",), cmd=("sh",)), (*base_history, run_entry))}),
        "image-history-without-base": b.build_document({"default": ran.with_image(ops.ImageConfig(), (run_entry,))}),
        "image-index-digest": b.build_document({"default": index}),
    }


def graph_invalid() -> dict[str, ops.Document]:
    """Broken graph rules, built with the builder: digests verify, ``check_graph`` fails."""
    base = busybox()
    ctx = b.local("context")
    one = lambda st, **kw: b.build_document({"default": st}, **kw)  # noqa: E731

    def exec_op(**kw) -> b.State:
        body = dict(args=("true",), mounts=(ops.Mount("/", input=0, output=0),))
        body.update(kw)
        inputs = kw.pop("_inputs", None)
        body.pop("_inputs", None)
        return base._next(b.vertex("exec", ops.ExecOp(**body), inputs or [(base.vertex, 0)]))

    def file_op(action: ops.FileAction, inputs=None) -> b.State:
        return base._next(b.vertex("file", ops.FileOp((action,)), inputs or [(base.vertex, 0)]))

    cases = {
        "exec-relative-cwd": one(exec_op(cwd="work")),
        "exec-empty-args": one(exec_op(args=())),
        "exec-env-no-equals": one(exec_op(env=("PATH",))),
        "exec-root-not-first": one(exec_op(mounts=(ops.Mount("/tmp", "tmpfs", tmpfs=T), ops.Mount("/", input=0, output=0)))),
        "exec-output-gap": one(exec_op(mounts=(ops.Mount("/", input=0, output=1),))),
        "exec-mount-dotdot": one(exec_op(mounts=(ops.Mount("/", input=0, output=0), ops.Mount("/a/../etc", "tmpfs", tmpfs=T)))),
        "exec-duplicate-target": one(exec_op(mounts=(ops.Mount("/", input=0, output=0), ops.Mount("/t", "tmpfs", tmpfs=T),
                                                     ops.Mount("/t", "tmpfs", tmpfs=T)))),
        "exec-secret-with-input": one(exec_op(mounts=(ops.Mount("/", input=0, output=0), ops.Mount(
            "/run/secrets/x", "secret", input=0, secret=ops.SecretOptions("x")),))),
        "exec-secret-no-options": one(exec_op(mounts=(ops.Mount("/", input=0, output=0), ops.Mount("/s", "secret")))),
        "exec-cache-options-on-bind": one(exec_op(mounts=(ops.Mount("/", input=0, output=0), ops.Mount(
            "/c", "bind", cache=ops.CacheOptions("c"))))),
        "exec-cache-output": one(exec_op(mounts=(ops.Mount("/", input=0, output=0), ops.Mount(
            "/c", "cache", output=1, cache=ops.CacheOptions("c"))))),
        "exec-selector-escapes": one(exec_op(mounts=(ops.Mount("/", input=0, output=0), ops.Mount(
            "/src", input=0, selector="../../etc")))),
        "exec-mount-input-range": one(exec_op(mounts=(ops.Mount("/", input=0, output=0), ops.Mount("/src", input=3)))),
        "copy-src-range": one(file_op(ops.FileAction(copy=ops.CopyAction(2, "/a", "/a")))),
        "copy-src-path-escapes": one(file_op(ops.FileAction(copy=ops.CopyAction(1, "../../etc/passwd", "/p")),
                                             [(base.vertex, 0), (ctx.vertex, 0)])),
        "copy-bad-chmod": one(file_op(ops.FileAction(copy=ops.CopyAction(0, "/a", "/a", chmod="rwx")))),
        "mkfile-relative-path": one(file_op(ops.FileAction(mkfile=ops.MkfileAction("etc/motd")))),
        "mkdir-mode-range": one(file_op(ops.FileAction(mkdir=ops.MkdirAction("/d", 0o17777)))),
        "http-ftp-url": one(b.http("ftp://example.com/x")),
        "http-filename-slash": one(b.http("https://example.com/x", filename="a/b")),
        "image-bad-digest": one(b.image("busybox", digest="sha256:abc")),
        "git-subdir-escapes": one(b.git("https://example.com/r.git", subdir="../..")),
        "diff-one-input": one(base._next(b.vertex("diff", ops.DiffOp(), [(base.vertex, 0)]))),
        "source-with-input": one(base._next(b.vertex("source", ops.SourceOp(scratch=ops.ScratchSource()),
                                                    [(base.vertex, 0)]))),
        "image-env-no-equals": one(base.with_image(ops.ImageConfig(env=("=x",)))),
        "image-platform-path": one(base.with_image(ops.ImageConfig(), platform=ops.Platform("linux", "arm64/../.."))),
        "ref-output-range": b.build_document({"default": base._next(base.vertex, 1)}),
    }
    cases.update(normal_form_invalid(one, exec_op, file_op))
    return cases


def normal_form_invalid(one, exec_op, file_op) -> dict[str, ops.Document]:
    """One meaning, one encoding (``spec/ir.md`` § 4, rule 9): each case is a document that would
    be valid but for writing a value in a form other than its normal one."""
    root = ops.Mount("/", input=0, output=0)
    return {
        "normal-copy-src-path-relative": one(file_op(ops.FileAction(copy=ops.CopyAction(0, "hello.txt", "/hello.txt")))),
        "normal-copy-dest-dot": one(file_op(ops.FileAction(copy=ops.CopyAction(0, "/a", "/opt/./x/")))),
        "normal-copy-chmod-three-digits": one(file_op(ops.FileAction(copy=ops.CopyAction(0, "/a", "/a", chmod="755")))),
        "normal-mkdir-trailing-slash": one(file_op(ops.FileAction(mkdir=ops.MkdirAction("/d/")))),
        "normal-mkdir-owner-empty": one(file_op(ops.FileAction(mkdir=ops.MkdirAction("/d", owner=ops.Owner())))),
        "normal-exec-cwd": one(exec_op(cwd="/src/")),
        "normal-exec-mount-target-trailing-slash": one(exec_op(mounts=(root, ops.Mount("/tmp/", "tmpfs", tmpfs=T)))),
        "normal-exec-selector-root": one(exec_op(mounts=(root, ops.Mount("/src", input=0, selector="/")))),
        "normal-exec-tmpfs-options-absent": one(exec_op(mounts=(root, ops.Mount("/tmp", "tmpfs")))),
        "normal-exec-ssh-options-absent": one(exec_op(mounts=(root, ops.Mount("/run/ssh", "ssh")))),
        "normal-exec-cache-id-empty": one(exec_op(mounts=(root, ops.Mount("/c", "cache", cache=ops.CacheOptions(""))))),
        "normal-exec-secret-id-empty": one(exec_op(mounts=(root, ops.Mount("/s", "secret",
                                                                            secret=ops.SecretOptions(""))))),
        "normal-exec-ssh-id-empty": one(exec_op(mounts=(root, ops.Mount("/run/ssh", "ssh", ssh=ops.SSHOptions(""))))),
        "normal-git-subdir": one(b.git("https://example.com/r.git", subdir="/sub/")),
        "exec-host-newline": one(exec_op(extra_hosts=(ops.HostIP("a\n6.6.6.6\tbank.example", "10.0.0.1"),))),
        "exec-host-not-ip": one(exec_op(extra_hosts=(ops.HostIP("db", "host-gateway"),))),
        "exec-host-ip-zone": one(exec_op(extra_hosts=(ops.HostIP("db", "fe80::1%\n6.6.6.6\tbank.example"),))),
        "exec-shm-size-range": one(exec_op(shm_size=1 << 50)),
        "exec-ulimit-soft-above-hard": one(exec_op(ulimits=(ops.Ulimit("nofile", 2048, 1024),))),
        "normal-exec-host-ip": one(exec_op(extra_hosts=(ops.HostIP("db", "0:0::1"),))),
        "normal-exec-ulimits-unsorted": one(exec_op(ulimits=(ops.Ulimit("nproc", 10, 10), ops.Ulimit("core", 0, 0)))),
    }


def json_invalid() -> dict[str, dict]:
    """Broken encodings, written as edits of valid JSON documents."""
    good = jsonform.to_json(hello())
    exec_digest = next(d for d, op in good["ops"].items() if "exec" in op)
    img_digest = next(d for d, op in good["ops"].items() if "image" in op)
    out: dict[str, dict] = {}

    def case(name: str, edit) -> None:
        doc = copy.deepcopy(good)
        edit(doc)
        out[name] = doc

    def ex(doc) -> dict:
        return doc["ops"][exec_digest]["exec"]

    case("version-2", lambda d: d.update(version=2))
    case("version-missing", lambda d: d.pop("version"))
    case("unknown-feature", lambda d: d.update(features=sorted(d["features"] + ["exec.gpu"])))
    case("roots-missing", lambda d: d.pop("roots"))
    case("roots-empty", lambda d: d.update(roots={}))
    case("unknown-field", lambda d: ex(d).update(argv=["true"]))
    case("wrong-type", lambda d: ex(d).update(args="echo hello"))
    case("float", lambda d: ex(d)["mounts"][0].update(input=0.0))
    case("null", lambda d: ex(d).update(hostname=None) or _sort(ex(d)))
    case("enum-typo", lambda d: ex(d)["mounts"][0].update(type="bnd"))
    case("exec-ulimit-unknown-name",
         lambda d: ex(d).update(ulimits=[{"hard": 1, "name": "as", "soft": 1}]) or _sort(ex(d)))

    def reorder(d):
        e = ex(d)
        items = list(e.items())
        e.clear()
        e.update(reversed(items))
    case("key-order", reorder)
    case("default-present", lambda d: d["ops"][exec_digest]["exec"].update(cwd="/") or _sort(ex(d)))
    case("features-unsorted", lambda d: d.update(features=list(reversed(d["features"]))))
    case("features-undeclared", lambda d: d.update(features=["exec", "source.image"]))

    def two_kinds(d):
        d["ops"][img_digest]["exec"] = {"args": ["true"], "mounts": [{"target": "/"}]}
        _sort(d["ops"][img_digest])
    case("two-kinds", two_kinds)
    case("no-kind", lambda d: d["ops"][img_digest].pop("image"))

    def bad_digest(d):
        d["ops"][exec_digest]["exec"]["args"] = ["/bin/sh", "-c", "echo bye > /hello"]
    case("digest-mismatch", bad_digest)

    def dangling(d):
        d["roots"]["default"]["op"] = "sha256:" + "0" * 64
    case("dangling-root", dangling)
    case("metadata-unknown-op", lambda d: d["metadata"].update({"sha256:" + "f" * 64: {"description": "x"}}))
    case("location-file-range", lambda d: d["metadata"][exec_digest]["locations"][0].update(file=3))
    case("base64", lambda d: d["sources"][0].update(data="not base64!"))

    def unknown_kind(d):
        d["ops"][exec_digest]["run"] = d["ops"][exec_digest].pop("exec")
    case("unknown-op-kind", unknown_kind)

    def near_digest(d):
        # A root naming a digest that differs from an op's only after the shown prefix.
        d["roots"]["default"]["op"] = img_digest[:-1] + ("0" if img_digest[-1] != "0" else "1")
    case("dangling-root-near-digest", near_digest)

    def cycle(d):
        # Point the exec op's input at the image op that reads it; the digests cannot all verify.
        d["ops"][exec_digest]["inputs"][0]["op"] = img_digest
    case("cycle", cycle)
    return out


def _sort(m: dict) -> None:
    items = sorted(m.items(), key=lambda kv: kv[0].encode())
    m.clear()
    m.update(items)


def verdict(doc_json: dict) -> str:
    from ir.errors import IRError, ValidationErrors
    from ir.validate import validate_document

    try:
        validate_document(jsonform.document_from_json(doc_json))
    except ValidationErrors as e:
        return str(e.errors[0])
    except IRError as e:
        return str(e)
    return "valid"


def main() -> None:
    for d in ("valid", "invalid"):
        for old in (HERE / d).glob("*.json"):
            old.unlink()
    for name, doc in valid().items():
        (HERE / "valid" / f"{name}.json").write_text(jsonform.dumps(doc) + "\n", encoding="utf-8")
    invalid = {n: jsonform.to_json(d) for n, d in graph_invalid().items()}
    invalid.update(json_invalid())
    for name, doc in sorted(invalid.items()):
        (HERE / "invalid" / f"{name}.json").write_text(
            json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for d in ("valid", "invalid"):
        for path in sorted((HERE / d).glob("*.json")):
            print(f"{d}/{path.name}: {verdict(json.loads(path.read_text()))}")


if __name__ == "__main__":
    main()
