"""Which handler runs which op: one ``OpHandler`` class per kind of ``ir.ops.OP_KINDS``.

The table is derived from the handler classes' own ``kind`` and checked against the IR's list when
this module is imported, so an op kind added to the IR without a handler (or a handler for a kind
the IR does not have) fails at once rather than when a graph first uses it.
"""

from __future__ import annotations

from ir import ops as irops

from backend.ops.exec import ExecHandler
from backend.ops.file import FileHandler
from backend.ops.handler import OpHandler
from backend.ops.image import ImageHandler
from backend.ops.merge import DiffHandler, MergeHandler
from backend.ops.source import SourceHandler

_HANDLERS = (SourceHandler, ExecHandler, FileHandler, MergeHandler, DiffHandler, ImageHandler)
HANDLERS: dict[str, type[OpHandler]] = {h.kind: h for h in _HANDLERS}

if sorted(HANDLERS) != sorted(irops.OP_KINDS) or len(HANDLERS) != len(_HANDLERS):  # pragma: no cover
    raise ImportError(f"op handlers {sorted(HANDLERS)} do not match the IR's op kinds {sorted(irops.OP_KINDS)}")


def handler_for(op: irops.Op) -> OpHandler:
    """The handler of ``op`` (a validated op: exactly one kind is set)."""
    return HANDLERS[op.kind](op)
