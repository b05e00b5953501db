"""Go's formatting of strings, lists, durations and runes, as BuildKit's history lines and messages show them.

``dockerfile2llb`` writes image history with ``fmt.Sprintf`` (``%q``, ``%v``) and
``time.Duration.String``; every frontend that wants the same history bytes (hence the same
digests) formats through these.
"""

from __future__ import annotations


def go_quote(s: str) -> str:
    """Go's ``strconv.Quote`` for valid UTF-8 text."""
    import unicodedata

    out = ['"']
    esc = {"\a": r"\a", "\b": r"\b", "\f": r"\f", "\n": r"\n", "\r": r"\r", "\t": r"\t",
           "\v": r"\v", "\\": "\\\\", '"': '\\"'}
    for ch in s:
        if ch in esc:
            out.append(esc[ch])
        elif " " <= ch < "\x7f":
            out.append(ch)
        elif ord(ch) < 0x20 or ch == "\x7f":
            out.append("\\x%02x" % ord(ch))
        elif ch == " " or unicodedata.category(ch)[0] in "LMNPS":
            out.append(ch)
        elif ord(ch) < 0x10000:
            out.append("\\u%04x" % ord(ch))
        else:
            out.append("\\U%08x" % ord(ch))
    out.append('"')
    return "".join(out)


def go_list(values) -> str:
    """``fmt.Sprintf("%v", []string)``: ``[a b c]``."""
    return "[" + " ".join(values) + "]"


def go_quoted_list(values) -> str:
    """``fmt.Sprintf("%q", []string)``: ``["a" "b"]``."""
    return "[" + " ".join(go_quote(v) for v in values) + "]"


def go_duration(ns: int) -> str:
    """Go's ``time.Duration.String``."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _frac(ns, size) + unit
    h, rem = divmod(ns, 3_600_000_000_000)
    m, rem = divmod(rem, 60_000_000_000)
    out = ""
    if h:
        out += f"{h}h"
    if h or m:
        out += f"{m}m"
    out += _frac(rem, 1_000_000_000) + "s"
    return sign + out


def _frac(value: int, unit: int) -> str:
    whole, rest = divmod(value, unit)
    if not rest:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}." + f"{rest:0{digits}d}".rstrip("0")


def go_char(n: int) -> str:
    """``%q`` of an int: a quoted rune literal."""
    if 0x20 <= n < 0x7F and chr(n) not in "'\\":
        return f"'{chr(n)}'"
    if n < 0x100:
        return "'\\x%02x'" % n
    return "'\\u%04x'" % n
