"""What solving an op output yields: a snapshot (layers, or a read-only host directory) plus its
content identity.  Downstream cache keys are computed from identities, never from positions or
from the keys of what came before — that is what gives early cutoff."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ImageMeta:
    """The image config attached by an ``image`` op (wire form of ``ir.ops.ImageOp``)."""

    config: dict  # OCI `config` object: Env, Cmd, Entrypoint, WorkingDir, User, Labels, ...
    history: tuple[dict, ...] = ()
    platform: dict = field(default_factory=lambda: {"os": "linux", "architecture": "amd64"})


@dataclass(frozen=True)
class Snapshot:
    """A filesystem.  Either ``layers`` (overlay upper-format dirs, bottom first) or, for a local
    context, ``host_dir`` with the dockerignore-style ``include``/``exclude`` filters applied."""

    identity: str  # "sha256:…": a content identity, independent of mtimes and of how it was made
    layers: tuple[Path, ...] = ()
    host_dir: Path | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    image: ImageMeta | None = None
    # when the result that made each layer was made (ns since the epoch, parallel to ``layers``; None:
    # unknown): an exporter's history times, so a cached step keeps its time and a no-op rebuild
    # gives the same image digest.  Not content: left out of comparisons, never part of a key.
    created: tuple[int | None, ...] = field(default=(), compare=False)

    def layer_times(self) -> tuple[int | None, ...]:
        return self.created if len(self.created) == len(self.layers) else (None,) * len(self.layers)
