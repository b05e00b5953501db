"""A step's results between the solver and the store: index rows in, snapshots out, and times.

The store's index keeps, per cache key, each output's identity, layer ids, image metadata and the
time each layer was made; these turn a snapshot into such a row and back.  Layer times make a
cached step keep its time, so a no-op rebuild exports the same image digest.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from backend.ops.workspace import Workspace, layer_id_of
from backend.result import ImageMeta, Snapshot
from backend.store.records import Output


def stamp(outs: list[Snapshot], inputs: list[Snapshot], now: int) -> list[Snapshot]:
    """Give each layer of an op's fresh outputs its time: an input's layer keeps the input's time, a
    layer the op made is ``now``.  (A layer the op made whose bytes happen to equal an older layer
    still gets ``now``: the step ran, as BuildKit's new snapshot would.)"""
    known: dict[Path, int | None] = {}
    for snap in inputs:
        known.update(zip(snap.layers, snap.layer_times()))
    return [dataclasses.replace(s, created=tuple(known[p] if p in known else now for p in s.layers))
            if s.host_dir is None else s for s in outs]


def to_output(ws: Workspace, snap: Snapshot) -> Output:
    if snap.host_dir is not None:
        ids = [ws.local_layer(snap)]
    else:
        ids = [layer_id_of(p) for p in snap.layers]
    image = dataclasses.asdict(snap.image) if snap.image is not None else None
    if image is not None:
        image["history"] = list(image["history"])
    created = snap.layer_times() if snap.host_dir is None else (None,)
    return Output(snap.identity, tuple(ids), image, created if any(t is not None for t in created) else ())


def from_output(ws: Workspace, o: Output) -> Snapshot:
    image = None
    if o.image is not None:
        image = ImageMeta(config=o.image["config"], history=tuple(o.image.get("history") or ()),
                          platform=o.image.get("platform") or {})
    return Snapshot(identity=o.identity, layers=tuple(ws.store.layer_path(i) for i in o.layers), image=image,
                    created=o.created)


def known_times(ws: Workspace, snap: Snapshot) -> Snapshot:
    """``snap`` with a time for every layer: where no result recorded one (a base image's layers, a
    cache from an older irctl) the layer's first commit to the store, which does not move either."""
    times = snap.layer_times()
    if all(t is not None for t in times):
        return snap
    ids = [layer_id_of(p) for p in snap.layers]
    first = ws.store.layer_times([i for i, t in zip(ids, times) if t is None])
    return dataclasses.replace(snap, created=tuple(t if t is not None else first.get(i) for i, t in zip(ids, times)))


def materialize(ws: Workspace, snap: Snapshot) -> Snapshot:
    """``snap`` with every layer present as a dir (pulled layers extracted, a local context copied)."""
    if snap.host_dir is not None:
        lid = ws.local_layer(snap)
        return Snapshot(identity=snap.identity, layers=(ws.store.layer_path(lid),), image=snap.image)
    ws.lowers(snap)
    return snap
