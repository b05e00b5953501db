"""The generated parts of ``spec/ir.md``: one field table per class and the feature table.

The prose lives in the spec; the tables come from ``ir/ops.py`` and ``ir/features.py`` so they
cannot drift (``tests/ir/test_spec.py`` compares).  Regenerate the spec's marked region with
``python -m ir.spec_tables --write spec/ir.md``.
"""

from __future__ import annotations

import sys
import typing
from types import NoneType, UnionType
from typing import Any, Literal

from ir import features, ops

BEGIN = "<!-- BEGIN GENERATED: python -m ir.spec_tables --write spec/ir.md -->"
END = "<!-- END GENERATED -->"


def classes() -> list[type]:
    """Every class reachable from ``Document``, depth first in field order."""
    out: list[type] = []

    def visit(tp: Any) -> None:
        if ops.is_node(tp):
            if tp in out:
                return
            out.append(tp)
            for f in ops.field_specs(tp):
                visit(f.type)
        for arg in typing.get_args(tp):
            visit(arg)

    visit(ops.Document)
    return out


def type_text(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is UnionType or origin is typing.Union:
        (tp,) = [a for a in typing.get_args(tp) if a is not NoneType]
        origin = typing.get_origin(tp)
    if tp in (str, bytes, bool, int):
        return {str: "string", bytes: "binary", bool: "boolean", int: "integer"}[tp]
    if origin is Literal:
        return "string: " + ", ".join(f"`{a}`" for a in typing.get_args(tp))
    if origin is tuple:
        return "array of " + type_text(typing.get_args(tp)[0])
    if origin is dict:
        return "map of string → " + type_text(typing.get_args(tp)[1])
    if ops.is_node(tp):
        return f"[{tp.__name__}](#{tp.__name__.lower()})"
    raise TypeError(tp)


def default_text(f: ops.FieldSpec) -> str:
    if f.required:
        return "**required**"
    value = f.default
    if value is None:
        return "absent"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int):
        return f"`{value}` (octal `{value:o}`)" if f.name == "mode" else f"`{value}`"
    if isinstance(value, (str, bytes)):
        return f"`\"{value.decode() if isinstance(value, bytes) else value}\"`" if value else "`\"\"` (empty)"
    if isinstance(value, tuple):
        return "`[]` (empty)"
    if isinstance(value, dict):
        return "`{}` (empty)"
    return "every field at its default"


def class_table(cls: type) -> str:
    lines = [f"#### {cls.__name__}", ""]
    if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):
        lines += [" ".join(cls.__doc__.split()), ""]
    if cls in ops.ONE_OF:
        members = [f"`{f.name}`" for f in ops.field_specs(cls) if f.name != "inputs"]
        lines += [f"A tagged union: exactly one of {', '.join(members)} MUST be present.", ""]
    fs = ops.field_specs(cls)
    if not fs:
        lines += ["No fields: always encoded as the empty map.", ""]
        return "\n".join(lines)
    lines += ["| Field | Type | Default | Meaning |", "|---|---|---|---|"]
    for f in fs:
        tp = type_text(f.type)
        if f.sorted:
            tp += " (sorted, unique)"
        text = f.doc.replace("|", "\\|")
        lines.append(f"| `{f.name}` | {tp} | {default_text(f)} | {text} |")
    lines.append("")
    return "\n".join(lines)


def feature_table() -> str:
    lines = ["| Feature | Used by |", "|---|---|"]
    for name in sorted(features.DESCRIPTIONS):
        lines.append(f"| `{name}` | {features.DESCRIPTIONS[name]} |")
    return "\n".join(lines) + "\n"


def generated() -> str:
    parts = [BEGIN, "", "### Features", "", feature_table(), "### Fields", ""]
    parts += [class_table(c) for c in classes()]
    parts.append(END)
    return "\n".join(parts)


def splice(text: str) -> str:
    """``text`` with its generated region replaced by the current tables."""
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + generated() + text[end:]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write"]:
        path = sys.argv[2]
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(splice(text))
    else:
        print(generated())
