"""``--platform`` and ``FROM --platform`` values read and normalised as containerd's
``platforms.Parse`` reads them (BuildKit's reference): one platform, one spelling."""

from __future__ import annotations

import pytest

from frontends.common.platforms import parse_platform
from ir import ops


@pytest.mark.parametrize("text, want", [
    ("linux/amd64", ("linux", "amd64", "")),
    ("x86_64", ("linux", "amd64", "")),
    ("linux/amd64/v1", ("linux", "amd64", "")),
    ("linux/amd64/v3", ("linux", "amd64", "v3")),
    ("linux/arm64", ("linux", "arm64", "")),
    ("linux/arm64/v8", ("linux", "arm64", "")),
    ("aarch64", ("linux", "arm64", "")),
    ("linux/arm", ("linux", "arm", "v7")),
    ("linux/arm/7", ("linux", "arm", "v7")),
    ("linux/arm/v6", ("linux", "arm", "v6")),
    ("armhf", ("linux", "arm", "v7")),
    ("armel", ("linux", "arm", "v6")),
    ("linux/i386", ("linux", "386", "")),
    ("Linux/S390X", ("linux", "s390x", "")),
    ("windows", ("windows", "amd64", "")),
])
def test_spellings_of_one_platform_are_one_platform(text, want):
    assert parse_platform(text) == ops.Platform(*want)


@pytest.mark.parametrize("text", ["linux/arm64/v8/x", "linux/../arm64", "", "linux//arm64"])
def test_what_is_not_a_platform_is_refused(text):
    with pytest.raises(ValueError, match="unknown operating system or architecture"):
        parse_platform(text)
