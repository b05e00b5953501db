"""The shapes the store's index keeps and reports: an op's cached outputs (one row of ``results``,
as JSON) and the store's usage (``irctl cache du``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Output:
    """One cached op output: its content identity, layer ids (bottom first), image metadata, and when
    the result that made each layer was made (ns since the epoch, parallel to ``layers``).

    ``created`` is stored in the same row, hence the same transaction, as the rest; a row written
    before it existed has none (an empty tuple), and a reader falls back to the layer's first commit
    time (``CacheStore.layer_times``): stable too, so an old cache gives stable digests from then on."""

    identity: str
    layers: tuple[str, ...] = ()
    image: dict | None = None
    created: tuple[int | None, ...] = ()

    def to_json(self) -> dict:
        d = {"identity": self.identity, "layers": list(self.layers), "image": self.image}
        if self.created:
            d["created"] = list(self.created)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Output":
        created = d.get("created")
        ok = (isinstance(created, list) and len(created) == len(d["layers"])
              and all(t is None or type(t) is int for t in created))
        return cls(d["identity"], tuple(d["layers"]), d.get("image"), tuple(created) if ok else ())


@dataclass(frozen=True)
class Usage:
    results: int
    layers: int
    layer_bytes: int
    blob_bytes: int
    mount_bytes: int
    mounts: int

    @property
    def total(self) -> int:
        return self.layer_bytes + self.blob_bytes + self.mount_bytes
