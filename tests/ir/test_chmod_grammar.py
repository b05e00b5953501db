"""The IR accepts exactly chmod(1)'s modes — found by hypothesis: the Dockerfile frontend accepted
`--chmod=-x-x` (expanded from an ARG) and the IR validator, with a narrower grammar, rejected the
graph the frontend had just built."""

import pytest

from ir.validate import _valid_chmod


@pytest.mark.parametrize("mode", ["0755", "7", "u+x", "-x-x", "u+r-w", "a=rX,g-w", "go=u", "u+", "=", "ug+s,o-t"])
def test_valid(mode):
    assert _valid_chmod(mode)


@pytest.mark.parametrize("mode", ["", "x", "u+y", "07777", "8", "u+x,", ",u+x", "u+go", "a=rwz"])
def test_invalid(mode):
    assert not _valid_chmod(mode)
