"""irctl steps as REAPI actions: the remote cache, remote execution, and the worker that runs them.

A step's cache action is a pure function of its content-based cache key, so any machine that computes
the same key finds the same result; its result names layer blobs in the server's CAS, fetched only
when something reads them.  See spec/remote.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backend.reapi.address import Endpoint


@dataclass(frozen=True)
class FarmOptions:
    """What a solve asks of a REAPI server: its action cache and CAS as a shared cache (``cache``;
    ``upload=False`` reads only), and the server that executes steps (``execute``).  Layers sent
    are written with ``source_date_epoch`` (the export's), so the export reuses their blobs."""

    cache: Endpoint | None = None
    upload: bool = True
    execute: Endpoint | None = None
    source_date_epoch: int | None = None
