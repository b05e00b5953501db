"""Write the digest test vectors (``ops.json``, ``documents.json``) from ``ir.builder``.

    python spec/vectors/generate.py

Each op vector is ``{"name", "op" (JSON form), "canonical_hex", "digest"}``; each document vector
is ``{"name", "document" (JSON form), "file_hex"}`` — the whole uncompressed file, header included.
The vectors cover every op kind and the encoding corners: negative fixint, uint 8/16/32/64, str 8
and 16, bin 16, non-ASCII key order, empty maps.  ``tests/ir/test_vectors.py`` recomputes them;
regenerating must not change an existing vector (that would be an incompatible change, spec § 9).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ir import builder as b  # noqa: E402
from ir import codec, jsonform, ops  # noqa: E402

D1 = "sha256:7b3ccabffc97de872a30dfd234fd972a66d247c8cfc69b0550f276481852627c"


def op_vectors() -> list[tuple[str, ops.Op]]:
    scratch = b.scratch()
    busybox = b.image("docker.io/library/busybox:1.36", digest=D1)
    ctx = b.local("context", include=["src/**", "go.mod"], exclude=["**/*_test.go", "!keep_test.go"])
    arm = b.image("docker.io/library/alpine:3.20", platform=ops.Platform("linux", "arm64", "v8"))
    run = busybox.with_env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").with_cwd("/work").with_user("1000:1000")
    exec_all = run.run_outputs(
        ["/bin/sh", "-c", "make -j4 && cp out /out/"],
        mounts=[b.bind("/src", ctx, selector="/src", readonly=True), b.bind("/out", scratch, readonly=False, output=True),
                b.cache("/root/.cache/go-build", "go-build", "locked", uid=1000, gid=1000, mode=0o700),
                b.tmpfs("/tmp", size=64 << 20), b.secret("npmrc", "/root/.npmrc", required=True, mode=0o440),
                b.ssh(required=True)],
        hostname="builder", network="none", security="insecure")[1]
    files = scratch.file([
        ops.FileAction(mkdir=ops.MkdirAction("/etc/app", 0o750, True, ops.Owner("app", "app"), 1700000000)),
        ops.FileAction(mkfile=ops.MkfileAction("/etc/app/config", bytes(range(256)) * 2, 0o600, None, 0)),
        ops.FileAction(symlink=ops.SymlinkAction("config", "/etc/app/" + "x" * 40)),
        ops.FileAction(copy=ops.CopyAction(0, "/src/*.go", "/app/", ops.Owner("1000"), "u+x,g-w", True, True, True,
                                           True, True, ("*.go",), ("vendor/",), True, False, 4294967296)),
        ops.FileAction(rm=ops.RmAction("/etc/app/" + "y" * 300, True, True)),
    ], [ctx], on_scratch=True)
    image = files.with_image(ops.ImageConfig(
        env=("PATH=/bin", "LANG=C.UTF-8"), cmd=("serve",), entrypoint=("/app/run",), working_dir="/app",
        user="app", labels={"z": "last", "Z": "upper", "é": "accent", "a": "first"},
        exposed_ports=("443/tcp", "80/tcp"), volumes=("/data",), stop_signal="SIGTERM",
        healthcheck=ops.Healthcheck(("CMD", "/app/health"), 30_000_000_000, 5_000_000_000, 0, 0, 3),
        shell=("/bin/sh", "-c"), on_build=("RUN echo child",)),
        [ops.HistoryEntry("FROM scratch", "base", "2024-01-01T00:00:00Z", True)], ops.Platform("linux", "arm64", "v8"))
    return [
        ("source scratch", scratch.vertex.op),
        ("source image pinned", busybox.vertex.op),
        ("source image platform", arm.vertex.op),
        ("source local", ctx.vertex.op),
        ("source http", b.http("https://example.com/f.tar.gz", "sha256:" + "0" * 64, "f.tgz", 0o755).vertex.op),
        ("source git", b.git("https://github.com/moby/buildkit.git", "v0.13.0", True, "frontend").vertex.op),
        ("source oci_layout", b.oci_layout("layout", "v1", D1).vertex.op),
        ("exec with every mount type", exec_all.vertex.op),
        ("exec of another platform", arm.run(["uname", "-m"], platform=ops.Platform("linux", "arm64", "v8")).vertex.op),
        ("file actions on scratch", files.vertex.op),
        ("merge", busybox.merge([files, ctx]).vertex.op),
        ("diff", busybox.diff(files).vertex.op),
        ("image", image.vertex.op),
    ]


def document_vectors() -> list[tuple[str, ops.Document]]:
    busybox = b.image("docker.io/library/busybox:1.36", digest=D1)
    st = busybox.with_meta("[1/2] RUN echo hello > /hello", "build", [ops.Location(0, 2, 1, 2, 23)]).run(
        ["/bin/sh", "-c", "echo hello > /hello"], env=["PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
    img = st.with_image(ops.ImageConfig(cmd=("cat", "/hello")), [ops.HistoryEntry(created_by="RUN echo hello > /hello")])
    src = ops.SourceFile("Dockerfile", "dockerfile", b"FROM busybox:1.36\nRUN echo hello > /hello\n")
    return [
        ("scratch only", b.build_document({"default": b.scratch()})),
        ("busybox hello with metadata", b.build_document({"default": img, "run": st}, [src])),
    ]


def main() -> None:
    here = Path(__file__).resolve().parent
    op_out = [{"name": name, "op": jsonform.to_json(op), "canonical_hex": codec.canonical_bytes(op).hex(),
               "digest": codec.op_digest(op)} for name, op in op_vectors()]
    doc_out = [{"name": name, "document": jsonform.to_json(doc),
                "file_hex": codec.dump_document(doc, compress=False).hex()} for name, doc in document_vectors()]
    (here / "ops.json").write_text(json.dumps(op_out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (here / "documents.json").write_text(json.dumps(doc_out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
