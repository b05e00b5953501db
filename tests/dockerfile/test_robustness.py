"""Whatever the input, the parser either returns or raises a located SourceError: no crash,
no traceback for the CLI.  Inputs are built from Dockerfile-ish fragments so that the interesting
paths (continuations, heredocs, flags, JSON, quotes, escapes) are actually reached."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frontends.common.errors import ExpandError
from frontends.common.expand import Expander
from frontends.dockerfile.dockerignore import IgnoreError, ignore_matcher
from frontends.dockerfile.parse import parse_dockerfile
from frontends.errors import SourceError

FRAGMENTS = [
    "FROM", "from", "RUN", "COPY", "ADD", "ENV", "LABEL", "ARG", "CMD", "ENTRYPOINT", "ONBUILD",
    "HEALTHCHECK", "SHELL", "EXPOSE", "VOLUME", "USER", "WORKDIR", "STOPSIGNAL", "MAINTAINER",
    "NONE", "AS", " ", " ", "\t", "\n", "\n", "\r\n", "\\", "\\\n", "`", "# escape=`\n",
    "# syntax=x\n", "# check=skip=all\n", "#", "<<EOF", "<<-EOF", "<<'EOF'", "EOF", "\tEOF",
    "--mount=", "type=cache", "type=secret", "type=ssh", "type=tmpfs", ",target=/x", ",id=",
    ",size=1m", ",mode=0755", ",rw", ",required", "--from=a", "--chmod=", "755", "u+x",
    "--link", "--platform=$P", "--interval=1s", "--retries=", "[", "]", "\"", "'", ",", "=",
    "a", "b=c", "$x", "${x:-y}", "${", "}", "\ufeff", "--", "-", "é", "\x00",
]

text = st.lists(st.sampled_from(FRAGMENTS), max_size=60).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text)
def test_parse_never_crashes(src):
    try:
        df = parse_dockerfile(src, "Dockerfile")
    except SourceError as e:
        assert e.span.line >= 0 and e.format().startswith("Dockerfile:")
        return
    for ins in df.instructions:
        assert 1 <= ins.span.line <= ins.span.end_line
    df.to_oracle_json()
    df.dump()


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab$'\"\\{}:-+?#%/ *", max_size=30))
def test_expander_never_crashes(word):
    try:
        Expander().words(word, {"a": "x y", "b": ""})
    except ExpandError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="ab*?/!.[]\\", min_size=1, max_size=8), max_size=5),
       st.text(alphabet="ab/.", min_size=1, max_size=10))
def test_ignore_matcher_never_crashes(patterns, path):
    try:
        m = ignore_matcher(patterns)
    except IgnoreError:
        return
    m.matches(path)
    m.may_match_under(path)
    m.may_unmatch_under(path)
