"""The typed layer: every instruction's fields, spans and the Dockerfile-level API."""

from __future__ import annotations

import pytest

from frontends.dockerfile import instructions as I
from frontends.dockerfile.parse import parse_dockerfile

TEXT = """\
# syntax=docker/dockerfile:1
# check=skip=MaintainerDeprecated
ARG BASE=alpine:3.20 TAG
FROM --platform=$BUILDPLATFORM ${BASE} AS Build
RUN --mount=type=cache,target=/root/.cache --network=none --security=insecure \\
    pip install \\
    # a comment inside the continuation
    requests
RUN ["echo", "exec"]
CMD ["app", "--flag"]
ENTRYPOINT exec app
SHELL ["/bin/bash", "-c"]
LABEL a=1 "b c"="d e"
LABEL legacy value with spaces
MAINTAINER someone <a@b.c>
EXPOSE 80 53/udp
ENV A=1 B="two words"
ENV OLD style value
ADD --chown=1:1 --chmod=u+rwx,go+rx --link --keep-git-dir --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 --exclude=*.md --unpack=false https://x.invalid/a.tgz /dst/
COPY --from=build --parents --exclude=a --exclude=b --chmod=0644 ["a b", "c", "/d/"]
COPY <<EOF <<-'EOT' /etc/
hello $A
EOF
\tbody
\tEOT
VOLUME ["/data", "/logs"]
VOLUME /a /b
USER app:app
WORKDIR /app
ONBUILD RUN --mount=type=secret,id=x cat /run/secrets/x
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=1m30s --timeout=5s --start-period=2s --start-interval=500ms --retries=3 CMD curl -f http://x/
HEALTHCHECK NONE
FROM scratch
copy --from=Build /a /b
"""


@pytest.fixture(scope="module")
def df():
    return parse_dockerfile(TEXT.replace("\\t", "\t"), "Dockerfile")


def by_line(df, line):
    return next(i for i in df.instructions if i.span.line == line)


def test_directives_and_meta_args(df):
    assert df.directives == {"syntax": "docker/dockerfile:1", "check": "skip=MaintainerDeprecated"}
    assert [a.args for a in df.meta_args] == [(I.ArgDecl("BASE", "alpine:3.20"), I.ArgDecl("TAG"))]
    assert [s.name for s in df.stages] == ["build", None]


def test_from(df):
    f = by_line(df, 4)
    assert isinstance(f, I.From)
    assert (f.image, f.stage_name, f.stage_name_as_written, f.platform) == (
        "${BASE}", "build", "Build", "$BUILDPLATFORM")
    assert f.flags[0].name == "platform" and f.flags[0].span.column == 6


def test_run_shell_form_with_mount_and_continuation(df):
    r = by_line(df, 5)
    assert isinstance(r, I.Run)
    assert r.command == I.CommandLine(("pip install     requests",), True)
    assert (r.span.line, r.span.end_line, r.network, r.security) == (5, 8, "none", "insecure")
    assert r.mounts[0].type == "cache" and r.mounts[0].target == "/root/.cache" and r.mounts[0].id == ""


def test_exec_forms(df):
    assert by_line(df, 9).command == I.CommandLine(("echo", "exec"), False)
    assert by_line(df, 10).command == I.CommandLine(("app", "--flag"), False)
    assert by_line(df, 11).command == I.CommandLine(("exec app",), True)
    assert by_line(df, 12).shell == ("/bin/bash", "-c")


def test_label_env_pairs(df):
    assert by_line(df, 13).pairs == (I.KeyValue("a", "1"), I.KeyValue('"b c"', '"d e"'))
    assert by_line(df, 14).pairs == (I.KeyValue("legacy", "value with spaces", legacy=True),)
    assert by_line(df, 17).pairs == (I.KeyValue("A", "1"), I.KeyValue("B", '"two words"'))
    assert by_line(df, 18).pairs == (I.KeyValue("OLD", "style value", legacy=True),)


def test_simple_ones(df):
    assert by_line(df, 15).maintainer == "someone <a@b.c>"
    assert by_line(df, 16).ports == ("80", "53/udp")
    assert by_line(df, 26).paths == ("/data", "/logs")
    assert by_line(df, 27).paths == ("/a", "/b")
    assert by_line(df, 28).user == "app:app"
    assert by_line(df, 29).path == "/app"
    assert by_line(df, 31).signal == "SIGTERM"


def test_add(df):
    a = by_line(df, 19)
    assert isinstance(a, I.Add)
    assert (a.chown, a.chmod, a.link, a.keep_git_dir, a.unpack) == ("1:1", "u+rwx,go+rx", True, True, False)
    assert a.checksum.startswith("sha256:") and a.exclude == ("*.md",)
    assert (a.sources, a.dest) == (("https://x.invalid/a.tgz",), "/dst/")


def test_copy_json_and_heredocs(df):
    c = by_line(df, 20)
    assert (c.from_, c.parents, c.exclude, c.chmod, c.json_form) == ("build", True, ("a", "b"), "0644", True)
    assert (c.sources, c.dest) == (("a b", "c"), "/d/")
    h = by_line(df, 21)
    assert (h.span.line, h.span.end_line) == (21, 25)
    assert h.sources == () and h.dest == "/etc/"
    assert h.contents == (I.SourceContent("EOF", "hello $A\n", True), I.SourceContent("EOT", "body\n", False))
    assert h.heredocs[1].chomp and h.heredocs[1].content == "\tbody\n"
    assert (h.heredocs[0].span.line, h.heredocs[0].span.end_line) == (22, 23)


def test_onbuild(df):
    o = by_line(df, 30)
    assert o.expression == "RUN --mount=type=secret,id=x cat /run/secrets/x"
    assert isinstance(o.trigger, I.Run) and o.trigger.mounts[0].target == "/run/secrets/x"
    assert o.trigger.span.column == 9


def test_healthcheck(df):
    h = by_line(df, 32)
    assert h.test == ("CMD-SHELL", "curl -f http://x/")
    assert (h.interval, h.timeout, h.start_period, h.start_interval, h.retries) == (90, 5, 2, 0.5, 3)
    assert by_line(df, 33).disabled


def test_keyword_as_written(df):
    c = df.instructions[-1]
    assert (c.keyword, c.name, c.from_) == ("copy", "COPY", "Build")


def test_warnings(df):
    rules = {(w.rule, w.span.line) for w in df.warnings}
    assert ("JSONArgsRecommended", 11) in rules  # ENTRYPOINT in shell form, before any SHELL
    assert ("LegacyKeyValueFormat", 14) in rules and ("LegacyKeyValueFormat", 18) in rules
    assert ("StageNameCasing", 4) in rules
    assert ("ConsistentInstructionCasing", 35) in rules
    assert ("MultipleInstructionsDisallowed", 32) in rules
    assert not any(w.rule == "MaintainerDeprecated" for w in df.warnings)  # skipped by # check=


def test_crlf_bom_and_positions():
    df = parse_dockerfile("\ufeff# escape=`\r\nFROM a\r\nRUN echo `\r\n  b\r\n", "D")
    r = df.instructions[1]
    assert df.escape == "`" and r.command.args == ("echo   b",)
    assert (r.span.line, r.span.end_line, r.span.column) == (3, 4, 1)


def test_indented_instruction_column():
    df = parse_dockerfile("FROM a\n    RUN true\n")
    assert df.instructions[1].span.column == 5


def test_oracle_json_shape():
    out = parse_dockerfile("FROM a\nENV k v\n").to_oracle_json()
    assert out["instructions"][1] == {
        "cmd": "ENV", "sub_cmd": None, "json": False, "original": "ENV k v", "start_line": 2,
        "end_line": 2, "flags": [], "value": ["k", "v"], "heredocs": []}


def test_dump_keeps_current_buildkit_separator():
    assert parse_dockerfile("FROM a\nENV k=v\nLABEL x y\n").dump().splitlines()[1:] == [
        '(env "k" "v" "=")', '(label "x" "y" "")']


def test_empty_continuation_line_warns():
    df = parse_dockerfile("FROM a\nRUN echo \\\n\n  b\n")
    assert [(w.rule, w.span.line) for w in df.warnings] == [("NoEmptyContinuation", 3)]
    assert df.instructions[1].command.args == ("echo   b",)
