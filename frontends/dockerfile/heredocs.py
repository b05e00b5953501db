"""The ``<<[-]NAME`` words of RUN/COPY/ADD (BuildKit ``heredocsFromLine``, ``parseHeredoc``):
which words open a heredoc, its name, and whether its body is expanded (an unquoted name)."""

from __future__ import annotations

import re

from frontends.common.errors import ExpandError
from frontends.common.expand import Expander
from frontends.dockerfile.scanner import HeredocBody

HEREDOC_WORD = re.compile(r"(\d*)<<(-?)([^<]*)\Z", re.S)
HEREDOC_OP = re.compile(r"(\d*)<<(-?)\Z")
HEREDOC_KEYWORDS = frozenset({"run", "copy", "add"})


def heredocs_in(line: str) -> list[HeredocBody]:
    """The ``<<NAME`` words of a RUN/COPY/ADD line (BuildKit ``heredocsFromLine``)."""
    lex = Expander("\\", raw_quotes=True, raw_escapes=True, skip_unset_env=True)
    try:
        words = lex.words(line)
    except ExpandError:
        return []
    docs: list[HeredocBody] = []
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        m = HEREDOC_WORD.match(word)
        if not m:
            continue
        fd, chomp, rest = m.group(1), m.group(2) == "-", m.group(3)
        if rest == "" and HEREDOC_OP.match(word) and i < len(words):
            rest = words[i]  # "<<  EOF": whitespace after the operator (BuildKit >= 0.22)
            if "<" in rest:
                continue
            i += 1
        if not rest:
            continue
        doc = heredoc_from(fd, chomp, rest)
        if doc is not None:
            docs.append(doc)
    return docs


def heredoc_from(fd: str, chomp: bool, rest: str) -> HeredocBody | None:
    """The heredoc a ``<<[-]`` operator's word names (``fd``, ``-``: chomp tabs), or None when
    the word is not one name (BuildKit ``parseHeredoc``)."""
    plain = Expander("\\", skip_unset_env=True)
    raw = Expander("\\", raw_quotes=True, skip_unset_env=True)
    try:
        words = plain.words(rest)
        if len(words) != 1:
            return None
        raw_words = raw.words(rest)
    except ExpandError:
        return None
    if len(raw_words) != 1:
        return None
    word, word_raw = words[0], raw_words[0]
    quotes = word.count("'") + word.count('"')
    quotes_raw = word_raw.count("'") + word_raw.count('"')
    return HeredocBody(
        name=word, file_descriptor=int(fd or 0), expand=quotes == quotes_raw, chomp=chomp
    )
