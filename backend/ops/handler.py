"""The interface every op handler has: what goes into its op's cache key, and how the op runs.

One handler class per IR op kind (``backend.ops.registry`` maps ``ir.ops.OP_KINDS`` to them), as
BuildKit gives each op one object with ``CacheMap`` and ``Exec``.  The solver never looks at an op's
kind: it asks the handler for the parts of the key (``key_body``, ``reads``, ``key_extra``), hashes
them with its inputs' identities (``backend.solve.keys``), and calls ``run`` on a miss.
"""

from __future__ import annotations

from typing import ClassVar

from ir import ops as irops

from backend.ops.workspace import Step, Workspace
from backend.result import Snapshot

# What an op reads of one input when that is only parts of it: ("copy" | "mount", the action that
# selects them); None where the input counts whole.
Reads = list[tuple[str, irops.CopyAction]] | None


class OpHandler:
    """The handler of one op; subclasses set ``kind`` (an ``ir.ops.OP_KINDS`` name) and ``run``."""

    kind: ClassVar[str]
    cost: ClassVar[float] = 0.1  # relative run time, for the scheduler's longest-path-first order
    announces_start: ClassVar[bool] = False  # True: ``run`` emits "started" itself (an exec, once it has a slot)

    def __init__(self, op: irops.Op) -> None:
        self.op = op

    # -- before anything runs ---------------------------------------------------------------------
    def grant_problems(self, options, where: str) -> list[str]:
        """What this op wants that ``options`` (``SolveOptions``) did not grant, one line each."""
        return []

    def network(self, options) -> str | None:
        """The network a process of this op runs with; None: the op runs no process."""
        return None

    # -- the key ----------------------------------------------------------------------------------
    def resolve(self, ws: Workspace, step: Step) -> Snapshot | None:
        """The op's result when it needs no key (a source resolved from its content); None: keyed."""
        return None

    def key_body(self) -> irops.Op:
        """The op as its cache key sees it: without its inputs (their identities are added instead)."""
        return irops.replace(self.op, inputs=())

    def reads(self, index: int) -> Reads:
        """What the op reads of its input ``index`` when only parts (see ``Reads``)."""
        return None

    def key_extra(self, options) -> str | None:
        """What, beyond the op and its inputs, the key needs (from ``options``); None: never cached."""
        return ""

    # -- the run ----------------------------------------------------------------------------------
    def run(self, ws: Workspace, step: Step, inputs: list[Snapshot]) -> list[Snapshot]:
        """Make the op's outputs from its inputs' snapshots."""
        raise NotImplementedError
