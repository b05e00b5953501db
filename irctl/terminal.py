"""Text from untrusted places, made safe to print on a terminal.

Step output, IR metadata (descriptions, groups, root names, source file names), Dockerfile
contents quoted in errors and file names from contexts can all hold control characters.  Written
raw to a terminal, ESC and CSI/OSC sequences retitle the window, clear the screen, move the cursor
or forge lines that look like irctl's own (``#3 DONE``); a CR or a backspace overwrites what was
shown.  ``printable`` shows every C0 control but tab (and newline where a message may have several
lines), DEL and every C1 control (U+0080–U+009F, which some terminals read as 8-bit CSI) escaped as
``\\x1b``; a backslash that starts such an escape is not itself escaped, so the text stays readable.
The sequences irctl emits itself (rich's live view) are added after this, never passed through it.
``--progress=json`` needs none of this: JSON escapes them (``\\u001b``).
"""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_UNSAFE_KEEP_NEWLINE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_C1 = re.compile("[\x7f-\x9f]")


def _escape(m: re.Match) -> str:
    return f"\\x{ord(m.group()):02x}"


def json_text(text: str) -> str:
    """JSON written with ``ensure_ascii=False``, with DEL and the C1 controls (which JSON leaves raw)
    escaped as ``\u009b``: still the same JSON."""
    return _C1.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def printable(text: str, *, newlines: bool = False) -> str:
    """``text`` with control characters escaped; ``newlines``: keep line breaks (a message of
    several lines), else they are escaped too (one event, one line)."""
    pattern = _UNSAFE_KEEP_NEWLINE if newlines else _UNSAFE
    return pattern.sub(_escape, text) if pattern.search(text) else text
