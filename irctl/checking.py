"""``irctl build --check``: the frontend's build checks only, printed as ``docker build --check``
prints them, and no solve.

buildx runs the frontend's lint subrequest (which resolves base images, so rules such as
UndefinedVar see their Env) and prints, on stdout, ``Check complete, N warnings have been found!``
then each warning as ``WARNING: Rule - URL``, its message and the Dockerfile lines (BuildKit's
``errdefs.Source.Print``); it exits 1 when any check fired.  A frontend without checks (TOML, the
Python DSL) has none to report.
"""

from __future__ import annotations

from typing import Callable

from frontends import Compiled
from frontends.errors import SourceWarning
from irctl.terminal import printable

_RULE = "-" * 20


def report(compiled: Compiled, say: Callable[[str], None]) -> int:
    """Print the checks that fired; the exit status (1: some did)."""
    found = compiled.checks
    if not found:
        say("Check complete, no warnings found.")
        return 0
    say("Check complete, " + ("1 warning has been found!" if len(found) == 1 else
                              f"{len(found)} warnings have been found!"))
    sources = {s.name: s.data for s in compiled.document.sources}
    for w in found:
        say("")
        say(f"WARNING: {w.rule}" + (f" - {w.url}" if w.url else ""))
        say(printable(w.message))
        say(excerpt(w, sources.get(w.span.file)))
    return 1


def excerpt(w: SourceWarning, source: bytes | None, context: int = 2) -> str:
    """``Dockerfile:7`` and the lines around it, the warning's own marked ``>>>``."""
    span = w.span
    end = max(span.end_line, span.line)
    head = f"{span.file}:{span.line}" + (f"-{end}" if end != span.line else "")
    if source is None or span.line < 1:
        return head
    lines = source.decode("utf-8", "replace").splitlines()
    out = [head, _RULE]
    for n in range(max(1, span.line - context), min(len(lines), end + context) + 1):
        mark = ">>>" if span.line <= n <= end else "   "
        out.append(f"{n:>4} | {mark} {printable(lines[n - 1])}".rstrip())
    out.append(_RULE)
    return "\n".join(out)
