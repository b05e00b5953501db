"""Build checks: each rule fires where BuildKit's would, and ``# check=`` controls them."""

from __future__ import annotations

import pytest

from frontends.dockerfile.checks import CheckConfig, is_secret_name
from frontends.dockerfile.parse import parse_dockerfile


def rules(text: str) -> list[tuple[str, int]]:
    return [(w.rule, w.span.line) for w in parse_dockerfile(text).warnings]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("FROM a\nCMD echo hi\n", [("JSONArgsRecommended", 2)]),
        ("FROM a\nSHELL [\"sh\", \"-c\"]\nCMD echo hi\n", []),
        ("FROM a\nENV k v\n", [("LegacyKeyValueFormat", 2)]),
        ("FROM a\nARG GITHUB_TOKEN\nENV PUBLIC_KEY=x DB_PASSWORD=y\n",
         [("SecretsUsedInArgOrEnv", 2), ("SecretsUsedInArgOrEnv", 3)]),
        ("FROM a\nMAINTAINER x\n", [("MaintainerDeprecated", 2)]),
        ("FROM a as b\n", [("FromAsCasing", 1)]),
        ("from a AS b\n", [("FromAsCasing", 1)]),
        ("FROM a AS Build\n", [("StageNameCasing", 1)]),
        ("FROM a AS b\nFROM c AS b\n", [("DuplicateStageName", 2)]),
        ("FROM a AS scratch\n", [("ReservedStageName", 1)]),
        ("FROM a\nrun true\nRUN true\nRUN true\n", [("ConsistentInstructionCasing", 2)]),
        ("FROM a\nWORKDIR app\n", [("WorkdirRelativePath", 2)]),
        ("FROM a\nWORKDIR /app\nWORKDIR sub\n", []),
        ("FROM a\nCMD [\"a\"]\nCMD [\"b\"]\n", [("MultipleInstructionsDisallowed", 2)]),
        ("FROM --platform=$TARGETPLATFORM a\n", [("RedundantTargetPlatform", 1)]),
        ("FROM --platform=linux/amd64 a\n", [("FromPlatformFlagConstDisallowed", 1)]),
        ("FROM $NOPE\n", [("UndefinedArgInFrom", 1)]),
        ("ARG V=1\nFROM a:$V\nFROM --platform=$BUILDPLATFORM b\n", []),
        ("FROM a\nEXPOSE 80/TCP 127.0.0.1:80:80\n", [("ExposeInvalidFormat", 2), ("ExposeProtoCasing", 2)]),
        ("FROM a\nRUN a \\\n\n b\n", [("NoEmptyContinuation", 3)]),
    ],
)
def test_rules(text, expected):
    assert sorted(rules(text)) == sorted(expected)


def test_check_directive_skips_rules():
    assert rules("# check=skip=JSONArgsRecommended,maintainerdeprecated\nFROM a\nCMD x\nMAINTAINER m\n") == []
    assert rules("# check=skip=all\nFROM a\nCMD x\n") == []
    assert CheckConfig.parse("skip=A;error=true") == CheckConfig(frozenset({"a"}), True)


def test_secret_names():
    assert is_secret_name("AWS_SECRET_ACCESS_KEY") and is_secret_name("token")
    assert not is_secret_name("PUBLIC_KEY") and not is_secret_name("KEYBOARD") and not is_secret_name("TOKENIZER")


def test_warning_format():
    w = parse_dockerfile("FROM a\nMAINTAINER m\n", "Dockerfile").warnings[0]
    assert w.format() == ("Dockerfile:2:1: warning: MaintainerDeprecated: Maintainer instruction is "
                          "deprecated in favor of using label\nMAINTAINER m\n^^^^^^^^^^")
    assert w.url == "https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/"
