"""BuildKit's shell-lexer tables (``envVarTest`` for ProcessWord, ``wordsTest`` for ProcessWords)
with the harness rules of ``buildkit-parser/README.md``, plus the pattern operators."""

from __future__ import annotations

import pytest

from frontends.common.errors import ExpandError
from frontends.common.expand import Expander, expand_word, expand_words
from tests.dockerfile.corpus import BUILDKIT, needs_corpus

SHELL = BUILDKIT / "shell"


def env_var_cases(platforms=("A", "U")):
    """Linux runs the all-platform (A) and Unix (U) lines, Windows the A and W lines."""
    if not (SHELL / "envVarTest").is_file():
        return []
    out = []
    for n, line in enumerate((SHELL / "envVarTest").read_text("utf-8").split("\n"), 1):
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        fields = [f.strip() for f in line.split("|")]
        assert len(fields) == 3, line
        platform, source, expected = fields
        if platform in platforms:
            out.append(pytest.param(source, expected, id=f"L{n}"))
    return out


def words_cases():
    if not (SHELL / "wordsTest").is_file():
        return []
    out, env = [], {}
    for n, line in enumerate((SHELL / "wordsTest").read_text("utf-8").split("\n"), 1):
        if line.startswith("#"):
            continue
        if line.startswith("ENV "):
            k, _, v = line[4:].lstrip(" ").partition("=")
            env[k] = v  # trailing spaces are significant
            continue
        if "|" not in line:
            continue
        source, expected = line.split("|")
        out.append(pytest.param(source.strip(), expected.lstrip(" ").split(","), dict(env), id=f"L{n}"))
    return out


ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": ""}


@needs_corpus
@pytest.mark.parametrize("source,expected", env_var_cases())
def test_env_var_table(source, expected):
    if expected == "error":
        with pytest.raises(ExpandError):
            Expander().word(source, ENV)
    else:
        assert Expander().word(source, ENV) == expected


@needs_corpus
@pytest.mark.parametrize("source,expected", env_var_cases(("A", "W")))
def test_env_var_table_windows(source, expected):
    lex = Expander(case_insensitive_env=True)
    if expected == "error":
        with pytest.raises(ExpandError):
            lex.word(source, ENV)
    else:
        assert lex.word(source, ENV) == expected


@needs_corpus
@pytest.mark.parametrize("source,expected,env", words_cases())
def test_words_table(source, expected, env):
    if expected == ["error"]:
        with pytest.raises(ExpandError):
            Expander().words(source, env)
    else:
        assert Expander().words(source, env) == expected


@pytest.mark.parametrize(
    "source,expected",
    [
        ("${v#*/}", "b/c.tar.gz"),
        ("${v##*/}", "c.tar.gz"),
        ("${v%.*}", "a/b/c.tar"),
        ("${v%%.*}", "a/b/c"),
        ("${v/b/X}", "a/X/c.tar.gz"),
        ("${v//./_}", "a/b/c_tar_gz"),
        ("${v/#a/Z}", "a/b/c.tar.gz"),  # no anchors in BuildKit: '#' is literal
        ("${v:-w}", "a/b/c.tar.gz"),
        ("${u:-w}", "w"),
        ("${u-w}", "w"),
        ("${e-w}", ""),
        ("${e:-w}", "w"),
        ("${e+w}", "w"),
        ("${e:+w}", ""),
        ("${v:+set}", "set"),
        ("${v/\\//|}", "a|b/c.tar.gz"),
    ],
)
def test_modifiers(source, expected):
    assert expand_word(source, {"v": "a/b/c.tar.gz", "e": ""}) == expected


def test_errors_carry_the_source():
    with pytest.raises(ExpandError, match=r'failed to process "\$\{u:\?must be set\}": u: must be set'):
        expand_word("${u:?must be set}", {})


def test_backtick_escape():
    assert Expander("`").word("a`$b c\\d", {"b": "x"}) == "a$b c\\d"


def test_words_keep_quoted_spaces():
    assert expand_words('a "b  c" $X', {"X": "1 2"}) == ["a", "b  c", "1", "2"]


def test_matched_and_unmatched_names():
    e = Expander().expand("$A ${B:-x} ${C}", {"A": "1"})
    assert e.matched == {"A"} and e.unmatched == {"B", "C"}


def test_skip_unset_keeps_references():
    lex = Expander(skip_unset_env=True)
    assert lex.word("$A ${B} ${C:-d} ${D/x/y}", {}) == "$A ${B} ${C:-d} ${D/x/y}"


def test_replacement_is_expanded_first():
    # the replacement is itself a word: $0 is a (always empty) special parameter
    assert expand_word("${v//b/<$0>}", {"v": "abc"}) == "a<>c"


def test_go_replacement_template():
    # what reaches Go's ReplaceAllString: $0 is the match, $$ a dollar, other $names empty
    import re

    from frontends.common.wildcards import go_template as _go_template

    assert re.sub("b", lambda m: _go_template("<$0|${0}|$$|$x>")(m.group(0)), "abc") == "a<b|b|$|>c"


def _regex_reference(pattern: str, greedy: bool, anchored: bool):
    """What BuildKit does: the wildcard as a regexp (the shape Go's regexp gets), matched leftmost-first."""
    import re

    star = ".*" if greedy else ".*?"
    body = "".join(star if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(("^" if anchored else "") + body)


def test_the_automaton_gives_the_regexps_answers():
    """`_Glob` (linear time) against the regexp on every pattern over {a, b, *, ?} up to 4 long and
    random values: ``#``/``##``/``%``/``%%`` trims and ``/``/``//`` substitutions agree."""
    import itertools
    import random

    rng = random.Random(7)
    values = ["", "a", "b", "\n", "ab\nab"] + ["".join(rng.choice("ab\n") for _ in range(rng.randrange(1, 10)))
                                              for _ in range(20)]
    for n in range(5):
        for chars in itertools.product("ab*?", repeat=n):
            pattern = "".join(chars)
            for v in values:
                for op, greedy in (("#", False), ("##", True), ("%", False), ("%%", True)):
                    if op.startswith("#"):
                        m = _regex_reference(pattern, greedy, True).search(v)
                        want = v[m.end():] if m else v
                    else:
                        m = _regex_reference(pattern[::-1], greedy, True).search(v[::-1])
                        want = (v[::-1][m.end():] if m else v[::-1])[::-1]
                    assert expand_word("${v%s%s}" % (op, pattern), {"v": v}) == want, (op, pattern, v)
                if not pattern:  # "${v//x}" reads as // with the pattern x
                    continue
                rx = _regex_reference(pattern, True, False)
                for op, count in (("/", 1), ("//", 0)):
                    want = rx.sub("<>", v, count=count)
                    assert expand_word("${v%s%s/<>}" % (op, pattern), {"v": v}) == want, (op, pattern, v)
