"""What one solve learned that a shared cache can carry: every cache key it looked up or filled with
the outputs behind it, the selection checksums those keys were made of, and which layers came from
base images (those a reader pulls from the image itself, so a cache never holds them).

The solver fills it (``SolveOptions.ledger``) as ops resolve, hit or run; ``backend.remotecache.export``
turns it into a ``CacheConfig``.
"""

from __future__ import annotations

import threading

from backend.store.records import Output


class CacheLedger:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: dict[str, tuple[Output, ...]] = {}
        self.selections: dict[tuple[str, str], str] = {}
        self.base_layers: set[str] = set()
        self.imported: set[str] = set()  # keys whose results came from a shared cache
        self.remote_layers: dict[str, tuple] = {}  # layer id -> (RemoteLayer, Origin) a shared cache gave
        # cache mount id -> (RemoteLayer, Origin): the copies the shared caches in use held (set once solved)
        self.remote_mounts: dict[str, tuple] = {}

    def reset(self) -> None:
        """Forget everything: the solver is building again (a shared cache failed it)."""
        with self._lock:
            self.records.clear()
            self.selections.clear()
            self.base_layers.clear()
            self.imported.clear()
            self.remote_layers.clear()

    def keyed(self, key: str, outputs: list[Output] | tuple[Output, ...], *, imported: bool = False) -> None:
        with self._lock:
            self.records[key] = tuple(outputs)
            if imported:
                self.imported.add(key)

    def remote_layer(self, layer_id: str, found: tuple) -> None:
        with self._lock:
            self.remote_layers[layer_id] = found

    def selection(self, identity: str, action: str, checksum: str) -> None:
        with self._lock:
            self.selections[(identity, action)] = checksum

    def resolved(self, layer_ids: list[str] | tuple[str, ...]) -> None:
        with self._lock:
            self.base_layers.update(layer_ids)
