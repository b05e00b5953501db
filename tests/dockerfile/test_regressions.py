"""Differences from BuildKit's parser found by fuzzing against the reference binding, kept as
fixed examples so CI (which has no binding) still checks them."""

from frontends.dockerfile.syntax import parse_syntax


def test_healthcheck_type_word_is_split_byte_by_byte():
    # BuildKit tests unicode.IsSpace(rune(byte)): the 0xC2 lead byte of U+00A0 is not a space,
    # so the no-break space stays at the start of the command.
    text = "FROM a\nHEALTHCHECK a \xa0 a\n"
    assert parse_syntax(text).to_oracle_json()["instructions"][1]["value"] == ["a", "\xa0 a"]
