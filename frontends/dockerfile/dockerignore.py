"""``.dockerignore``: which file BuildKit reads for a build, and the patterns in it.

The matching itself is the IR's (``ir/patterns.py``, moby/patternmatcher semantics): the patterns
read here travel in the graph as the build context's ``exclude`` and the backend applies them with
the same matcher the Dockerfile frontend uses for its ``CopyIgnoredFile`` check.  What is
Dockerfile-specific stays here, after moby's ``ignorefile`` reader and BuildKit's lookup:

* :func:`read_patterns`: a line starting with ``#`` is a comment; lines are trimmed; empty lines
  are skipped; a leading ``!`` makes an *exception* (re-include); patterns are cleaned like
  ``filepath.Clean`` and a leading ``/`` is dropped (``/a/../b/`` → ``b``);
* :func:`find_ignore_file`: ``<Dockerfile name>.dockerignore`` beside the Dockerfile, else
  ``.dockerignore`` at the root of the context.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from frontends.errors import FrontendError
from frontends.files import read_ignore_file
from ir.patterns import Matcher, PatternError, clean_path


class IgnoreError(FrontendError, ValueError):
    """An invalid pattern (``!`` alone, a bad character class)."""


def read_patterns(text: str) -> list[str]:
    """The patterns of a ``.dockerignore`` file's text (``ignorefile.ReadAll``)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    out = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = clean_path(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        out.append("!" + pattern if invert else pattern)
    return out


def ignore_matcher(patterns: Iterable[str]) -> Matcher:
    """The :class:`ir.patterns.Matcher` for ignore patterns; a bad one is a frontend error."""
    try:
        return Matcher(patterns)
    except PatternError as e:
        raise IgnoreError(str(e)) from None


def find_ignore_file(context_dir: str | os.PathLike, dockerfile: str | os.PathLike | None = None) -> Path | None:
    """The ignore file BuildKit reads for this build, or None.

    ``<dockerfile>.dockerignore`` next to the Dockerfile wins (``build/app.Dockerfile`` →
    ``build/app.Dockerfile.dockerignore``); otherwise ``.dockerignore`` in the context root."""
    if dockerfile is not None:
        df = Path(dockerfile)
        specific = df.with_name(df.name + ".dockerignore")
        if specific.is_file():
            return specific
    generic = Path(context_dir) / ".dockerignore"
    return generic if generic.is_file() else None


def load_matcher(context_dir: str | os.PathLike, dockerfile: str | os.PathLike | None = None) -> Matcher:
    """The matcher for a build (an empty one when there is no ignore file)."""
    path = find_ignore_file(context_dir, dockerfile)
    return ignore_matcher(read_patterns(read_ignore_file(path, Path(context_dir))) if path else ())
