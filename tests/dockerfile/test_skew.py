"""Where the oracle (BuildKit v0.12.5) and current BuildKit disagree, we follow current BuildKit
(``VERSION-SKEW.tsv``).  These tests pin the current behaviour on the very corpus files."""

from __future__ import annotations

import pytest

from frontends.dockerfile.syntax import parse_syntax
from tests.dockerfile.corpus import CORPUS, load_oracle, needs_corpus

pytestmark = needs_corpus


def tree(relpath: str):
    return parse_syntax((CORPUS / relpath).read_text("utf-8"), relpath)


@pytest.mark.parametrize(
    "relpath,line",
    [
        ("real-world/GoogleContainerTools__kaniko/integration__dockerfiles__Dockerfile_test_cmd.Dockerfile", 4),
        ("buildkit-parser/go-test-snippets/dockerfile_cmd_test_go/L00290.Dockerfile", 3),
        ("buildkit-parser/go-test-snippets/dockerfile_cmd_test_go/L00294.Dockerfile", 3),
        ("buildkit-parser/go-test-snippets/dockerfile_cmd_test_go/L00331.Dockerfile", 3),
        ("buildkit-parser/go-test-snippets/dockerfile_cmd_test_go/L00335.Dockerfile", 3),
        ("probes/json-trailing-garbage.Dockerfile", 2),
    ],
)
def test_json_followed_by_text_is_shell_form(relpath, line):
    node = next(n for n in tree(relpath).nodes if n.start_line == line)
    assert node.json is False
    assert node.values == [node.rest] and node.rest.startswith("[")
    # everything else agrees with the oracle
    want = [i for i in load_oracle(CORPUS / relpath)["instructions"] if i["start_line"] != line]
    got = [n.to_oracle_json() for n in tree(relpath).nodes if n.start_line != line]
    assert got == want


def test_whitespace_after_heredoc_operator():
    t = tree("probes/heredoc-whitespace-after-operator.Dockerfile")
    assert [n.cmd for n in t.nodes] == ["FROM", "RUN", "RUN"]
    assert [(h.name, h.content) for h in t.nodes[1].heredocs] == [
        ("EOF", "echo whitespace-before-heredoc-name\n")]
    assert [(h.name, h.content) for h in t.nodes[2].heredocs] == [("EOF", "shell-style\n")]
    assert (t.nodes[1].start_line, t.nodes[1].end_line) == (2, 4)


def test_flags_use_the_files_escape_character():
    t = tree("probes/escape-directive-backslash-in-flags.Dockerfile")
    assert t.escape == "`"
    assert [f.text for f in t.nodes[1].flags] == ["--mount=type=cache,target=C:\\cache"]
    assert [f.text for f in t.nodes[2].flags] == ["--chown=ab"]


def test_check_is_a_directive():
    t = tree("probes/check-directive-before-escape.Dockerfile")
    assert [(d.name, d.value) for d in t.directives] == [
        ("check", "skip=JSONArgsRecommended"), ("escape", "`")]
    assert [n.original for n in t.nodes] == ["FROM alpine", "RUN echo a   b"]
    assert t.nodes[1].end_line == 5


def test_onbuild_heredocs_stay_on_the_onbuild_node():
    """BuildKit (since PR #2209) reads heredocs for ONBUILD RUN/COPY/ADD and keeps them on the
    ONBUILD node; the oracle's binding looks for them on the trigger and so shows none."""
    t = parse_syntax("FROM a\nONBUILD RUN <<EOF\necho hi\nEOF\nRUN true\n")
    onbuild = t.nodes[1]
    assert (onbuild.start_line, onbuild.end_line) == (2, 4)
    assert [(h.name, h.content) for h in onbuild.heredocs] == [("EOF", "echo hi\n")]
    assert onbuild.original == "ONBUILD RUN <<EOF\necho hi\nEOF\n"
    assert [n.cmd for n in t.nodes] == ["FROM", "ONBUILD", "RUN"]


def test_flag_words_are_read_byte_by_byte():
    """BuildKit's extractBuilderFlags reads bytes: a non-ASCII character becomes one Latin-1
    character per UTF-8 byte, and the bytes 0x85/0xA0 end the word."""
    t = parse_syntax("FROM a\nCOPY --chown=josé a b\nCOPY --from=x\u00a0y a b\n")
    assert [f.text for f in t.nodes[1].flags] == ["--chown=josÃ©"]
    assert [f.text for f in t.nodes[2].flags] == ["--from=xÂ"]
    assert t.nodes[2].values == ["y", "a", "b"]
