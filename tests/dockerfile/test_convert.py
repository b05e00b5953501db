"""Unit tests of the Dockerfile → IR compiler, with the in-memory ImageResolver of
``tests.support.resolver``."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frontends import BuildRequest, FrontendError, NamedContext, ResolvedImage
from frontends.dockerfile import FRONTEND
from frontends.errors import SourceError
from ir import ops
from ir.validate import validate_document
from tests.support.projection import project
from tests.support.resolver import DIGEST, LAYOUT_DIGEST, FakeResolver


def compile_text(text: str, resolver: FakeResolver | None = None, **kw):
    req = BuildRequest(text.encode(), **kw)
    compiled = FRONTEND.compile(req, resolver or FakeResolver())
    validate_document(compiled.document)
    return compiled


def ops_of(compiled, kind: str) -> list[ops.Op]:
    return [op for op in compiled.document.ops.values() if op.kind == kind]


def final_image(compiled) -> ops.ImageOp:
    doc = compiled.document
    return doc.ops[doc.roots["default"].op].image


def by_description(compiled, text: str, kind: str = "") -> ops.Op:
    """The one op (not a source, unless ``kind`` says so) whose description contains ``text``."""
    doc = compiled.document
    found = [doc.ops[d] for d, m in doc.metadata.items() if text in m.description
             and (doc.ops[d].kind == kind if kind else doc.ops[d].kind != "source")]
    assert len(found) == 1, (text, [m.description for m in doc.metadata.values()])
    return found[0]


def error_of(text: str, **kw) -> str:
    with pytest.raises(FrontendError) as info:
        compile_text(text, **kw)
    assert isinstance(info.value, SourceError) or "\n" not in str(info.value)
    return str(info.value)


# --------------------------------------------------------------------------- frontend object


def test_frontend_object():
    assert FRONTEND.name == "dockerfile"
    assert "Dockerfile" in FRONTEND.patterns and "*.Dockerfile" in FRONTEND.patterns
    from frontends import for_file

    assert for_file("build.Dockerfile", {"dockerfile": (FRONTEND, "irctl")}) is FRONTEND


def test_import_is_cheap():
    import subprocess
    import sys

    code = "import sys, frontends.dockerfile; print('frontends.dockerfile.convert' in sys.modules, 'lark' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# --------------------------------------------------------------------------- stages


def test_image_pinned_by_digest_and_base_config():
    c = compile_text("FROM alpine\nRUN make\n")
    (src,) = [op for op in ops_of(c, "source") if op.source.image]
    assert src.source.image.ref == "docker.io/library/alpine:latest" and src.source.image.digest == DIGEST
    run = ops_of(c, "exec")[0].exec
    assert run.args == ("/bin/sh", "-c", "make")
    assert run.env == ("PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8") and run.cwd == "/srv"
    img = final_image(c)
    assert img.config.cmd == ("sh",) and img.config.working_dir == "/srv"
    assert [h.created_by for h in img.history][-1] == "RUN /bin/sh -c make # buildkit"
    assert c.document.roots.keys() == {"default"}
    assert c.document.sources[0] == ops.SourceFile("Dockerfile", "dockerfile", b"FROM alpine\nRUN make\n")


def test_only_reachable_stages_are_compiled_and_resolved():
    text = "FROM golang AS build\nRUN go build\nFROM debian:12 AS unused\nRUN exit 1\nFROM alpine\nCOPY --from=build /out /\n"
    r = FakeResolver()
    c = compile_text(text, r)
    assert ("image", "debian:12") not in r.calls
    assert not any("exit 1" in " ".join(op.exec.args) for op in ops_of(c, "exec"))
    c2 = compile_text(text, target="build")
    assert len(ops_of(c2, "exec")) == 1 and not ops_of(c2, "file")


def test_target_not_found():
    msg = error_of("FROM alpine AS build\nFROM alpine\n", target="biuld")
    assert msg == 'target stage "biuld" could not be found (did you mean build?)'


def test_independent_stages_share_only_their_base():
    text = "FROM alpine AS a\nRUN make a\nFROM alpine AS b\nRUN make b\nFROM scratch\nCOPY --from=a /a /\nCOPY --from=b /b /\n"
    doc = compile_text(text).document

    def closure(pred) -> set[str]:
        (start,) = [d for d, op in doc.ops.items() if op.exec and pred(op)]
        out, todo = set(), [start]
        while todo:
            d = todo.pop()
            if d not in out:
                out.add(d)
                todo.extend(r.op for r in doc.ops[d].inputs)
        return out

    a = closure(lambda op: op.exec.args[-1] == "make a")
    b = closure(lambda op: op.exec.args[-1] == "make b")
    shared = a & b
    assert len(shared) == 1 and doc.ops[shared.pop()].source.image is not None


def test_moved_lines_and_comments_keep_digests():
    one = "FROM alpine AS a\n# build it\nRUN make\n\nFROM alpine\nCOPY --from=a /x /y\n"
    two = "# a comment\n\nFROM alpine AS a\n\n\nRUN make\n# another\nFROM alpine\n\n# copy\nCOPY --from=a /x /y\n"
    d1, d2 = compile_text(one).document, compile_text(two).document
    assert set(d1.ops) == set(d2.ops) and d1.roots == d2.roots
    assert d1.metadata != d2.metadata


def test_stage_from_stage_inherits_state_config_and_args():
    text = "FROM alpine AS base\nARG V=1\nENV E=x\nWORKDIR /app\nUSER nobody\nFROM base\nRUN echo\n"
    c = compile_text(text)
    run = by_description(c, "RUN echo").exec
    assert run.cwd == "/app" and run.user == "nobody"
    assert "V=1" in run.env and "E=x" in run.env
    assert final_image(c).config.env[-1] == "E=x"


def test_stage_named_by_index_in_copy_from():
    c = compile_text("FROM alpine\nRUN make\nFROM scratch\nCOPY --from=0 /x /x\n")
    (f,) = ops_of(c, "file")
    assert c.document.ops[f.inputs[1].op].exec is not None


def test_copy_from_image_and_named_contexts():
    text = ("FROM alpine\nCOPY --from=busybox /bin/busybox /bin/\nCOPY --from=assets /logo.png /\n"
            "COPY --from=layout /etc/x /etc/\nCOPY --from=tools /bin/t /bin/\n")
    r = FakeResolver()
    c = compile_text(text, r, contexts={"assets": NamedContext("local"), "layout": NamedContext("oci_layout", "v1"),
                                        "tools": NamedContext("image", "golang")})
    sources = [op.source for op in ops_of(c, "source")]
    assert any(s.local and s.local.name == "assets" for s in sources)
    assert any(s.oci_layout and s.oci_layout == ops.OCILayoutSource("layout", "v1", LAYOUT_DIGEST) for s in sources)
    assert any(s.image and s.image.ref == "docker.io/library/busybox:latest" for s in sources)
    assert ("image", "golang") in r.calls and ("oci", "layout:v1") in r.calls


def test_from_named_context_and_stage_replaced_by_context():
    c = compile_text("FROM base\nRUN make\n", contexts={"base": NamedContext("image", "debian:12")})
    assert any(op.source.image and op.source.image.ref == "docker.io/library/debian:12" for op in ops_of(c, "source"))
    c2 = compile_text("FROM alpine AS deps\nRUN exit 1\nFROM alpine\nCOPY --from=deps /x /x\n",
                      contexts={"deps": NamedContext("local")})
    assert not ops_of(c2, "exec")
    assert any(op.source.local and op.source.local.name == "deps" for op in ops_of(c2, "source"))


def test_onbuild_triggers_run_after_from_and_are_consumed():
    c = compile_text("FROM onbuild-base\nRUN test\n")
    descs = sorted(m.description for m in c.document.metadata.values() if "/" in m.description and "[" in m.description)
    assert "[2/4] ONBUILD COPY . /app/src" in descs and "[3/4] ONBUILD RUN make -C /app/src" in descs
    img = final_image(c)
    assert img.config.on_build == ()
    assert [h.created_by for h in img.history][1:] == [
        "COPY . /app/src # buildkit", "RUN /bin/sh -c make -C /app/src # buildkit", "RUN /bin/sh -c test # buildkit"]


def test_onbuild_instruction_is_stored_and_run_by_child_stage():
    c = compile_text("FROM alpine AS base\nONBUILD RUN echo child\nFROM base\n", target="base")
    assert final_image(c).config.on_build == ("RUN echo child",)
    c2 = compile_text("FROM alpine AS base\nONBUILD RUN echo child\nFROM base\n")
    assert any(op.exec.args[-1] == "echo child" for op in ops_of(c2, "exec"))
    assert final_image(c2).config.on_build == ()


def test_scratch_and_platform_flag():
    c = compile_text("FROM --platform=linux/arm64/v8 alpine\nFROM scratch\nCOPY a /\n", target="")
    img = final_image(c)
    assert img.platform == ops.Platform()
    c2 = compile_text("FROM --platform=$BUILDPLATFORM alpine\nRUN x\n", build_platform=ops.Platform("linux", "arm64"))
    (src,) = [op for op in ops_of(c2, "source") if op.source.image]
    assert src.source.image.platform == ops.Platform("linux", "arm64")
    assert final_image(c2).platform == ops.Platform("linux", "arm64")


# --------------------------------------------------------------------------- ARG / ENV


def test_arg_scoping_and_build_args():
    text = ("ARG BASE=alpine\nARG TAG\nARG GLOBAL=g\nFROM ${BASE}\nARG GLOBAL\nARG LOCAL=l\nARG OVER=d\n"
            "RUN echo\nENV E=$LOCAL-$GLOBAL-$TAG\n")
    c = compile_text(text, build_args={"OVER": "o", "UNUSED": "u"})
    run = by_description(c, "RUN echo").exec
    assert run.env[-3:] == ("GLOBAL=g", "LOCAL=l", "OVER=o")
    img = final_image(c)
    assert "E=l-g-" in img.config.env
    assert not any(e.startswith(("GLOBAL=", "LOCAL=", "OVER=")) for e in img.config.env)
    assert [h.created_by for h in img.history][-4:] == [
        "ARG LOCAL=l", "ARG OVER=o", "RUN |3 GLOBAL=g LOCAL=l OVER=o /bin/sh -c echo # buildkit", "ENV E=l-g-"]


def test_global_arg_not_visible_without_redeclaration():
    c = compile_text("ARG V=1\nFROM alpine\nENV X=\"[$V]\"\n")
    assert "X=[]" in final_image(c).config.env


def test_predefined_platform_args():
    c = compile_text("FROM alpine\nARG TARGETPLATFORM\nARG BUILDARCH\nRUN echo $TARGETPLATFORM\n",
                     platform=ops.Platform("linux", "arm", "v7"))
    run = ops_of(c, "exec")[0].exec
    assert "TARGETPLATFORM=linux/arm/v7" in run.env and "BUILDARCH=amd64" in run.env
    assert run.args[-1] == "echo $TARGETPLATFORM"  # RUN is not expanded by the frontend


def test_proxy_args_only_when_given():
    c = compile_text("FROM alpine\nRUN apk add x\n", build_args={"HTTP_PROXY": "http://p:3128"})
    assert "HTTP_PROXY=http://p:3128" in ops_of(c, "exec")[0].exec.env
    c2 = compile_text("FROM alpine\nRUN apk add x\n")
    assert not any("PROXY" in e for e in ops_of(c2, "exec")[0].exec.env)


def test_env_expansion_uses_previous_values_and_replaces_in_place():
    c = compile_text("FROM alpine\nENV A=1\nENV A=2 B=$A\nENV LANG=en\n")
    env = final_image(c).config.env
    assert env == ("PATH=/usr/local/bin:/usr/bin:/bin", "LANG=en", "A=2", "B=1")


# --------------------------------------------------------------------------- RUN


def test_run_exec_form_shell_network_security():
    text = 'FROM alpine\nSHELL ["/bin/bash", "-eo", "pipefail", "-c"]\nRUN ["echo", "a b"]\nRUN --network=none --security=insecure make\n'
    c = compile_text(text)
    e1 = by_description(c, 'RUN ["echo", "a b"]').exec
    assert e1.args == ("echo", "a b")
    e2 = by_description(c, "RUN --network").exec
    assert e2.args == ("/bin/bash", "-eo", "pipefail", "-c", "make")
    assert e2.network == "none" and e2.security == "insecure"
    assert "exec.security.insecure" in c.document.features


def test_run_heredocs():
    text = ("FROM alpine\nRUN <<EOF\necho a\necho b\nEOF\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\n"
            "RUN python3 <<EOF\nprint(2)\nEOF\nRUN <<-EOF\n\techo tab\n\tEOF\n")
    c = compile_text(text)
    assert by_description(c, "RUN <<EOF (echo a...)").exec.args == ("/bin/sh", "-c", "echo a\necho b\n")
    shebang = by_description(c, "RUN <<EOF (#!/usr/bin/env python3...)")
    assert shebang.exec.args == ("/bin/sh", "-c", "/dev/pipes/EOF")
    m = shebang.exec.mounts[1]
    assert (m.target, m.readonly) == ("/dev/pipes", True)
    script = c.document.ops[shebang.inputs[m.input].op].file
    assert script.base == -1 and script.actions[0].mkfile == ops.MkfileAction("/EOF", b"#!/usr/bin/env python3\nprint(1)\n", 0o755)
    assert by_description(c, "RUN python3 <<EOF").exec.args == ("/bin/sh", "-c", "python3 <<EOF\nprint(2)\nEOF")
    assert by_description(c, "RUN <<-EOF").exec.args == ("/bin/sh", "-c", "echo tab\n")


def test_run_mounts_all_types():
    text = ("FROM alpine AS dep\nFROM alpine\nWORKDIR /w\n"
            "RUN --mount=type=bind,source=src,target=/src "
            "--mount=type=bind,from=dep,source=/out,target=rel,rw "
            "--mount=type=cache,target=/root/.cache/ "
            "--mount=type=cache,id=gomod,target=/go/pkg,sharing=locked,from=dep,source=/seed,uid=1000,gid=1000,mode=0700 "
            "--mount=type=tmpfs,target=/tmp,size=64m "
            "--mount=type=secret,id=npmrc "
            "--mount=type=secret,id=tok,env=TOKEN,required=true "
            "--mount=type=secret,id=aws,target=/root/.aws/credentials,uid=1000,mode=0440 "
            "--mount=type=ssh "
            "--mount=type=ssh,id=gh,required=true,mode=0666 make\n")
    c = compile_text(text)
    e = by_description(c, "RUN --mount")
    mounts = {m.target: m for m in e.exec.mounts}
    ctx = c.document.ops[e.inputs[mounts["/src"].input].op].source.local
    assert ctx.name == "context" and mounts["/src"].selector == "/src" and mounts["/src"].readonly
    dep = mounts["/w/rel"]
    assert not dep.readonly and dep.output == -1 and dep.selector == "/out"
    assert c.document.ops[e.inputs[dep.input].op].source.image is not None
    assert mounts["/root/.cache"].cache == ops.CacheOptions("/root/.cache")
    gomod = mounts["/go/pkg"]
    assert gomod.cache == ops.CacheOptions("gomod", "locked", 1000, 1000, 0o700) and gomod.selector == "/seed"
    assert gomod.input == dep.input
    assert mounts["/tmp"].tmpfs == ops.TmpfsOptions(64 << 20)
    assert mounts["/run/secrets/npmrc"].secret == ops.SecretOptions("npmrc")
    assert [m.secret for m in e.exec.mounts if m.secret and m.secret.id == "tok"] == [ops.SecretOptions("tok", "TOKEN", required=True)]
    assert mounts["/root/.aws/credentials"].secret == ops.SecretOptions("aws", uid=1000, mode=0o440)
    assert mounts["/run/buildkit/ssh_agent.0"].ssh == ops.SSHOptions()
    assert mounts["/run/buildkit/ssh_agent.1"].ssh == ops.SSHOptions("gh", mode=0o666, required=True)


def test_mount_without_target_lands_on_the_working_directory():
    """BuildKit joins an empty target with WORKDIR (``dispatchRunMounts``): bind, cache and tmpfs
    mounts without ``target=`` land there; only a working directory of ``/`` is refused."""
    c = compile_text("FROM alpine AS dep\nFROM alpine\nWORKDIR /app\n"
                     "RUN --mount=type=bind,source=requirements.txt cat requirements.txt\n"
                     "RUN --mount=type=bind,from=dep,source=/out make\n"
                     "RUN --mount=type=cache make\nRUN --mount=type=tmpfs make\n")
    bind_ctx, bind_dep, cache, tmpfs = (by_description(c, text).exec.mounts[1] for text in (
        "type=bind,source=req", "from=dep", "type=cache", "type=tmpfs"))
    assert (bind_ctx.target, bind_ctx.selector, bind_ctx.readonly) == ("/app", "/requirements.txt", True)
    assert (bind_dep.target, bind_dep.selector) == ("/app", "/out")
    assert cache.target == "/app" and cache.cache == ops.CacheOptions(".")  # BuildKit: path.Clean("")
    assert tmpfs.target == "/app" and tmpfs.tmpfs is not None
    msg = error_of("FROM alpine\nWORKDIR /\nRUN --mount=type=bind,source=x cat x\n")
    assert 'invalid mount target "/"' in msg and "working directory" in msg and "Dockerfile:3" in msg


def test_two_mounts_at_one_target_are_a_located_error():
    """Two mounts without ``target=`` both land on the working directory: said on the RUN's line,
    not as the IR validator's ``ops[…].mounts[2].target``."""
    msg = error_of("FROM alpine\nWORKDIR /w\nRUN --mount=type=tmpfs --mount=type=cache true\n")
    assert "Dockerfile:3" in msg and "two mounts at /w" in msg and "without target=" in msg
    msg = error_of("FROM alpine\nRUN --mount=type=tmpfs,target=/t --mount=type=cache,target=/t/ true\n")
    assert "Dockerfile:2" in msg and "two mounts at /t" in msg and "without target=" not in msg


def test_mount_values_expanded_from_args():
    c = compile_text("FROM alpine\nARG DIR=/cache\nRUN --mount=type=cache,target=$DIR make\n")
    (m,) = ops_of(c, "exec")[0].exec.mounts[1:]
    assert m.target == "/cache" and m.cache.id == "/cache"


# --------------------------------------------------------------------------- COPY / ADD


def copy_actions(op: ops.Op) -> list[ops.CopyAction]:
    return [a.copy for a in op.file.actions if a.copy]


def test_copy_defaults_dest_and_flags():
    text = ("FROM alpine\nWORKDIR /app\nCOPY a.txt ./\nCOPY --chown=app:staff --chmod=755 b c/\n"
            "COPY --chmod=u+x,go-w d /abs\nCOPY --exclude=*.md --parents src/./pkg/*.go .\n")
    c = compile_text(text, ignore_patterns=("*.log", "!keep.log"))
    (a,) = copy_actions(by_description(c, "COPY a.txt"))
    assert a == ops.CopyAction(src=1, src_path="/a.txt", dest="/app/", follow_symlinks=True, contents_only=True,
                               allow_wildcard=True, allow_empty_wildcard=True, create_dest_path=True)
    (b,) = copy_actions(by_description(c, "COPY --chown"))
    assert (b.dest, b.owner, b.chmod) == ("/app/c/", ops.Owner("app", "staff"), "0755")
    (d,) = copy_actions(by_description(c, "COPY --chmod=u+x"))
    assert (d.dest, d.chmod) == ("/abs", "u+x,go-w")
    (p,) = copy_actions(by_description(c, "COPY --exclude"))
    assert (p.src_path, p.include, p.exclude, p.dest) == ("/src", ("pkg/*.go",), ("*.md",), "/app/")
    (local,) = [op.source.local for op in ops_of(c, "source") if op.source.local]
    assert local == ops.LocalSource("context", exclude=("*.log", "!keep.log"))
    hist = [h.created_by for h in final_image(c).history]
    assert "COPY --chown=app:staff --chmod=755 b c/ # buildkit" in hist
    assert "COPY --parents src/./pkg/*.go . # buildkit" in hist


def test_copy_link_is_file_on_scratch_merged():
    c = compile_text("FROM alpine\nCOPY --link a /a\n")
    (merge,) = ops_of(c, "merge")
    layer = c.document.ops[merge.inputs[1].op]
    assert layer.file.base == -1 and len(merge.inputs) == 2
    assert c.document.ops[merge.inputs[0].op].source.image is not None
    descs = {m.description for m in c.document.metadata.values()}
    assert "[2/2] COPY --link a /a" in descs and "[2/2] LINK COPY --link a /a" in descs


def test_copy_heredoc_is_mkfile():
    c = compile_text("FROM alpine\nENV N=world\nCOPY --chmod=755 <<EOF <<'RAW' /etc/\nhello $N \"q\"\nEOF\nkeep $N\nRAW\n")
    op = by_description(c, "COPY --chmod=755 <<EOF")
    acts = copy_actions(op)
    assert [a.src_path for a in acts] == ["/EOF", "/RAW"] and all(a.dest == "/etc/" and a.chmod == "0755" for a in acts)
    files = [c.document.ops[op.inputs[a.src].op].file.actions[0].mkfile for a in acts]
    assert files[0].data == b'hello world "q"\n' and files[1].data == b"keep $N\n"
    assert "COPY --chmod=755 <<EOF <<RAW /etc/ # buildkit" in [h.created_by for h in final_image(c).history]


def test_add_url_git_archive():
    text = ("FROM alpine\nADD https://example.com/a/tool.tar.gz /opt/\n"
            "ADD --checksum=sha256:" + "0" * 64 + " https://example.com/x /x\n"
            "ADD --unpack=true https://example.com/b.tgz /b/\n"
            "ADD git@github.com:moby/buildkit.git#v0.12:docs /bk\n"
            "ADD --keep-git-dir https://github.com/moby/buildkit.git#main /bk2\n"
            "ADD app.tar.gz /srv/\nADD --unpack=false keep.tar /srv/\n")
    c = compile_text(text)
    tool = by_description(c, "tool.tar.gz")
    (a,) = copy_actions(tool)
    assert (a.src_path, a.dest, a.unpack) == ("/tool.tar.gz", "/opt/", False)
    assert c.document.ops[tool.inputs[1].op].source.http == ops.HTTPSource("https://example.com/a/tool.tar.gz", filename="tool.tar.gz")
    x = by_description(c, "--checksum")
    assert c.document.ops[x.inputs[1].op].source.http.checksum == "sha256:" + "0" * 64
    assert copy_actions(by_description(c, "--unpack=true"))[0].unpack is True
    bk = by_description(c, "ADD git@")
    assert c.document.ops[bk.inputs[1].op].source.git == ops.GitSource("git@github.com:moby/buildkit.git", "v0.12", False, "docs")
    bk2 = by_description(c, "--keep-git-dir")
    assert c.document.ops[bk2.inputs[1].op].source.git == ops.GitSource("https://github.com/moby/buildkit.git", "main", True)
    assert copy_actions(by_description(c, "ADD app.tar.gz"))[0].unpack is True
    assert copy_actions(by_description(c, "--unpack=false"))[0].unpack is False


# --------------------------------------------------------------------------- image config


def test_image_config_instructions():
    text = ("FROM alpine\nLABEL a=b \"c d\"=\"e f\"\nMAINTAINER me@x\nEXPOSE 80 53/udp 8000-8001\nVOLUME /data [\"/x\"]\n"
            "VOLUME [\"/v1\", \"/v2\"]\nSTOPSIGNAL SIGTERM\nUSER app:app\n"
            "HEALTHCHECK --interval=30s --timeout=1m30s --start-period=500ms --retries=3 CMD curl -f http://x || exit 1\n"
            "CMD [\"serve\"]\nENTRYPOINT [\"/bin/app\"]\nONBUILD RUN echo later\n")
    img = final_image(compile_text(text))
    cfg = img.config
    assert cfg.labels == {"a": "b", "c d": "e f", "maintainer": "me@x"}
    assert cfg.exposed_ports == ("53/udp", "80/tcp", "8000/tcp", "8001/tcp")
    assert cfg.volumes == ("/data", "/v1", "/v2", "[/x]")  # not JSON: a word list, quotes removed
    assert cfg.stop_signal == "SIGTERM" and cfg.user == "app:app"
    assert cfg.healthcheck == ops.Healthcheck(("CMD-SHELL", "curl -f http://x || exit 1"), 30 * 10**9, 90 * 10**9,
                                              500 * 10**6, 0, 3)
    assert cfg.cmd == ("serve",) and cfg.entrypoint == ("/bin/app",)  # CMD set in this stage survives
    assert cfg.on_build == ("RUN echo later",)
    hist = [(h.created_by, h.empty_layer) for h in img.history[1:]]
    assert hist[:4] == [('LABEL a=b c d=e f', True), ("MAINTAINER me@x", True),
                        ("EXPOSE map[53/udp:{} 80/tcp:{} 8000/tcp:{} 8001/tcp:{}]", True),
                        ('VOLUME [/data [/x]]', True)]
    assert ('HEALTHCHECK &{["CMD-SHELL" "curl -f http://x || exit 1"] "30s" "1m30s" "500ms" "0s" \'\\x03\'}', True) in hist
    assert ('CMD ["serve"]', True) in hist and ('ENTRYPOINT ["/bin/app"]', True) in hist
    assert all(h.comment == "buildkit.dockerfile.v0" for h in img.history[1:])


def test_entrypoint_resets_inherited_cmd_and_shell_form():
    img = final_image(compile_text('FROM alpine\nENTRYPOINT exec app\n'))
    assert img.config.cmd == () and img.config.entrypoint == ("/bin/sh", "-c", "exec app")


def test_workdir_mkdir_and_history():
    c = compile_text("FROM alpine\nUSER app\nWORKDIR /a\nWORKDIR b/../c\nWORKDIR /\n")
    mk = sorted((a.mkdir for op in ops_of(c, "file") for a in op.file.actions), key=lambda m: m.path)
    assert mk == [ops.MkdirAction("/a", 0o755, True, ops.Owner("app")), ops.MkdirAction("/a/c", 0o755, True, ops.Owner("app"))]
    hist = [(h.created_by, h.empty_layer) for h in final_image(c).history[-3:]]
    assert hist == [("WORKDIR /a", False), ("WORKDIR /a/c", False), ("WORKDIR /", True)]


# --------------------------------------------------------------------------- source map


def test_source_map_descriptions_groups_locations():
    text = "FROM alpine AS build\nRUN a \\\n  && b\nCOPY x /x\nFROM scratch\nCOPY --from=build /x /x\n"
    c = compile_text(text)
    metas = sorted((m.description, m.group, [(l.file, l.line, l.column, l.end_line) for l in m.locations])
                   for m in c.document.metadata.values())
    assert ("[build 2/3] RUN a   && b", "build", [(0, 2, 1, 3)]) in metas
    assert ("[build 3/3] COPY x /x", "build", [(0, 4, 1, 0)]) in metas
    assert ("[stage-1 1/1] COPY --from=build /x /x", "stage-1", [(0, 6, 1, 0)]) in metas
    assert ("[build 1/3] FROM docker.io/library/alpine:latest@" + DIGEST, "build", [(0, 1, 1, 0)]) in metas
    assert all(d in c.document.ops for d in c.document.metadata)
    assert len(c.document.metadata) == len(c.document.ops)


def test_single_stage_has_no_stage_prefix():
    c = compile_text("FROM alpine\nRUN a\n")
    assert by_description(c, "RUN a") is not None
    assert "[2/2] RUN a" in {m.description for m in c.document.metadata.values()}


def test_warnings_from_build_checks():
    c = compile_text("from alpine AS Build\nENV A b\nRUN x\n")
    assert any("StageNameCasing" in w for w in c.warnings)
    assert any(w.startswith("Dockerfile:2:1: warning: LegacyKeyValueFormat") for w in c.warnings)
    assert all("\n" not in w for w in c.warnings)


# --------------------------------------------------------------------------- errors


def test_error_is_contract_and_parser_error_with_caret():
    msg = error_of("FROM alpine\nCOPY --from=nosuch /a /b\n")
    assert msg.splitlines() == ["Dockerfile:2:6: \"nosuch\" is neither a stage of this Dockerfile nor an image that could be resolved: nosuch: not found",
                                "COPY --from=nosuch /a /b", "     ^^^^^^^^^^^^^"]


def test_errors_are_located():
    assert error_of("FROM alpine AS a\nCOPY --from=a /x /y\n").startswith(
        "Dockerfile:2:6: circular dependency detected on stage: a")
    assert error_of("FROM alpine\nARG M=a+y\nCOPY --chmod=$M a /b\n").startswith(
        'Dockerfile:3:6: invalid --chmod value "a+y"')
    assert error_of("FROM alpine\nARG M=17777\nCOPY --chmod=$M a /b\n").startswith(
        "Dockerfile:3:6: invalid chmod parameter: '17777'. it should be octal string and between 0 and 07777")
    assert error_of("FROM alpine\nRUN --mount=type=cache,target=/x,sharing=open make\n").startswith(
        'Dockerfile:2:42: unsupported sharing value "open"')
    assert error_of("FROM alpine\nRUNN make\n").startswith("Dockerfile:2:1: unknown instruction: RUNN (did you mean RUN?)")


def test_resolver_errors_never_leak_tracebacks():
    class Broken(FakeResolver):
        def resolve_image(self, ref, platform):
            raise RuntimeError("registry down")

    with pytest.raises(FrontendError) as info:
        compile_text("FROM alpine\n", Broken())
    assert str(info.value).startswith("Dockerfile:1:1: base image alpine: registry down")


def test_document_json_projection_is_stable():
    text = "FROM alpine\nRUN make\n"
    assert json.dumps(project(compile_text(text).document)) == json.dumps(project(compile_text(text).document))


def test_compiler_build_checks_undefined_var_and_ignored_copy():
    text = "FROM alpine\nARG DECL\nENV A=$NOPE B=${UNSET:-x} C=$DECL D=$PAHT\nCOPY app.log /x\nCOPY keep.log /y\n"
    c = compile_text(text, ignore_patterns=("*.log", "!keep.log"))
    assert list(c.warnings) == [
        "Dockerfile:3:1: warning: UndefinedVar: Usage of undefined variable '$NOPE'",
        "Dockerfile:3:1: warning: UndefinedVar: Usage of undefined variable '$PAHT' (did you mean $PATH?)",
        'Dockerfile:4:1: warning: CopyIgnoredFile: Attempting to Copy file "app.log" that is excluded by .dockerignore']
    skipped = compile_text("# check=skip=UndefinedVar\n" + text)
    assert not any("UndefinedVar" in w for w in skipped.warnings)


def test_check_error_directive_fails_the_build():
    msg = error_of("# check=error=true\nFROM alpine\nENV A=$NOPE\n")
    assert msg.startswith("Dockerfile:3:1: lint violation found for rules: UndefinedVar: Usage of undefined variable")


def test_named_context_matches_familiar_image_names():
    for base in ("alpine", "alpine:latest", "docker.io/library/alpine", "docker.io/library/alpine:latest"):
        c = compile_text(f"FROM {base}\nRUN x\n", contexts={"alpine": NamedContext("image", "busybox")})
        refs = {op.source.image.ref for op in ops_of(c, "source") if op.source.image}
        assert refs == {"docker.io/library/busybox:latest"}, base


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["", "# a comment", "#", "   ", "# syntax-like: no"]), min_size=8, max_size=8))
def test_comments_and_blank_lines_never_change_digests(fillers):
    body = ["FROM alpine AS a", "ARG V=1", "RUN make $V", "FROM alpine", "COPY --from=a /x /y", "RUN <<EOF",
            "echo hi", "EOF"]
    plain = compile_text("\n".join(body) + "\n").document
    mixed = []
    for i, line in enumerate(body):
        mixed.append(line)
        if fillers[i] and not (5 <= i < 7):  # not inside the heredoc body
            mixed.append(fillers[i])
    doc = compile_text("\n".join(mixed) + "\n").document
    assert set(doc.ops) == set(plain.ops) and doc.roots == plain.roots


def test_undeclared_arg_in_from_is_a_warning():
    c = compile_text("FROM alpine:${TAG:-latest}\nRUN x\n")
    assert c.warnings == ("Dockerfile:1:1: warning: UndefinedArgInFrom: FROM argument 'TAG' is not declared",)
    assert any(op.source.image for op in ops_of(c, "source"))


LINES = [
    "FROM alpine AS a", "FROM scratch", "FROM a", "FROM ${BASE}", "FROM nosuch", "FROM --platform=$BUILDPLATFORM busybox",
    "ARG BASE=alpine", "ARG V", "ARG V=$V-x", "ENV A=$V B=${V:-d}", "ENV P=${PATH}:/x", "LABEL l=$A",
    "RUN echo $A", "RUN [\"sh\", \"-c\", \"x\"]", "RUN --mount=type=cache,target=$V make", "RUN --network=$V x",
    "RUN --mount=type=bind,from=a,target=/a x", "RUN --mount=type=secret,id=s,target=rel x", "RUN <<EOF\necho\nEOF",
    "COPY . .", "COPY --from=a / /", "COPY --from=0 /x /y", "COPY --from=1 /x /y", "COPY --chmod=$V a b",
    "COPY --link --chown=$V:$V a /b/", "COPY <<EOF /f\n$A\nEOF", "ADD https://e.com/x.tgz /", "ADD a.tar /",
    "ADD git@h:r.git#r:s /", "WORKDIR $V", "WORKDIR /", "USER $V", "EXPOSE $V 80", "EXPOSE 1-2/udp",
    "VOLUME $V", "STOPSIGNAL $V", "SHELL [\"/bin/bash\", \"-c\"]", "CMD x", "ENTRYPOINT [\"e\"]",
    "HEALTHCHECK CMD x", "HEALTHCHECK NONE", "ONBUILD RUN x", "MAINTAINER $V", "# comment", "",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(LINES), min_size=1, max_size=12), st.dictionaries(
    st.sampled_from(["V", "BASE", "HTTP_PROXY"]), st.sampled_from(["", "1", "alpine", "/x", "a b", "$V"]), max_size=2))
def test_compile_never_crashes(lines, build_args):
    """Any mix of instructions compiles to a valid document or fails with a located FrontendError."""
    try:
        compile_text("FROM alpine AS first\n" + "\n".join(lines) + "\n", build_args=build_args)
    except FrontendError as e:
        assert str(e) and "Traceback" not in str(e)


def test_reordering_independent_stages_keeps_digests():
    a = "FROM alpine AS a\nRUN make a\n"
    b = "FROM golang AS b\nRUN make b\n"
    final = "FROM scratch\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n"
    one, two = compile_text(a + b + final).document, compile_text(b + a + final).document
    assert set(one.ops) == set(two.ops) and one.roots == two.roots


def test_base_image_platform_mismatch_is_a_warning():
    class Arm(FakeResolver):
        def resolve_image(self, ref, platform):
            r = super().resolve_image(ref, platform)
            return ResolvedImage(r.ref, r.digest, {**r.config, "architecture": "arm64"}, r.platform)

    c = compile_text("FROM alpine\n", Arm())
    assert c.warnings == ('Dockerfile:1:1: warning: InvalidBaseImagePlatform: Base image alpine was pulled with '
                          'platform "linux/arm64", expected "linux/amd64" for current build',)


def test_a_base_working_dir_with_a_trailing_slash_becomes_a_normal_cwd() -> None:
    """The IR refuses `cwd` `/srv/` (one meaning, one spelling: spec/ir.md § 4 rule 9), so the
    base image's WorkingDir is normalised before a RUN inherits it."""
    class SlashResolver(FakeResolver):
        def resolve_image(self, ref: str, platform: ops.Platform) -> ResolvedImage:
            found = super().resolve_image(ref, platform)
            config = {**found.config, "config": {**found.config["config"], "WorkingDir": "/srv//app/"}}
            return ResolvedImage(found.ref, found.digest, config, platform)

    doc = compile_text("FROM alpine\nRUN true\n", SlashResolver()).document  # validated by compile_text
    assert [op.exec.cwd for op in doc.ops.values() if op.exec] == ["/srv/app"]
