"""Put layers in a REAPI server's CAS: a blob and a descriptor for every layer a result names.

Where a layer's blob comes from depends on where the layer came from: one a REAPI result named is
already in that server's CAS; a base image's layer (its id is its diff_id) is sent as the very blob
the image was pulled as, so a reader checks it by its tar alone, as the image's own; a layer this
machine built is compressed as the export compresses it (``write_layer_to_store``: gzip, the same
memo, so an export or a ``--cache-to`` after it reuses the blob).  Only the blobs the server lacks
are sent (``FindMissingBlobs``).

A blob a result of the server named is never sent from here, even when this machine holds a blob of
that digest: the result may be a hostile writer's, naming (under a layer a later step of this build
stacks on without reading it) the blob of a private image this machine once pulled.  The server
lost it, or never had it: the upload fails, with a warning.  For the same reason an image's layer
is sent only when an image this build resolved names it (a hit the local store kept from such a
result would otherwise stack it in, in a later build).
"""

from __future__ import annotations

from collections.abc import Iterable

from backend.errors import BackendError
from backend.oci.compression import MEDIA_TYPES, compression_named
from backend.oci.layerstore import write_layer_to_store
from backend.oci.pull import RemoteLayer

COMPRESSION = "gzip"  # what every client and worker writes, so their blobs of one layer are one blob


def ensure_in_cas(ws, remote, layer_ids: Iterable[str], *, source_date_epoch: int | None = None
                  ) -> dict[str, RemoteLayer]:
    """A descriptor for every layer of ``layer_ids`` (``ws``: the solve's workspace, its store and
    image resolver), each blob in ``remote``'s CAS afterwards.  Raises ``RemoteError`` (the server)
    or ``BackendError``/``OSError`` (a layer that cannot be had here)."""
    layers: dict[str, RemoteLayer] = {}
    ours: set[tuple[str, int]] = set()  # the blobs made or pulled here (not named by the server)
    for lid in dict.fromkeys(layer_ids):
        named = _named_here(ws, remote, lid)
        layers[lid] = named or _descriptor(ws, lid, source_date_epoch)
        if named is None:
            ours.add((layers[lid].blob, layers[lid].size))
    blobs = {(x.blob, x.size) for x in layers.values()}
    for blob, size in sorted(remote.find_missing(blobs)):
        if (blob, size) not in ours:  # (see the module's docstring)
            raise BackendError(f"layer blob {blob}, which a result of the server named, is not on the server")
        remote.upload_file(ws.store.blobs.path(blob), (blob, size))
    return layers


def _named_here(ws, remote, lid: str) -> RemoteLayer | None:
    """The descriptor a result of ``remote``'s server (any channel to it) gave ``lid``, if any."""
    found = ws.images.remote_layer(lid)
    if found is not None and found[1][0] == "reapi" and getattr(found[1][1], "endpoint", None) == remote.endpoint:
        return found[0]
    return None


def _descriptor(ws, lid: str, source_date_epoch: int | None) -> RemoteLayer:
    found = ws.images.remote_layer(lid)
    if ws.store.layer_blob(lid) is not None and not ws.images.resolved_layer(lid):
        raise BackendError(f"layer {lid} is one of an image no source of this build names (a cache's result "
                           "stacked it): not sent")
    pulled = ws.images.stored_blob(lid)
    if pulled is not None:
        return RemoteLayer(pulled.blob, MEDIA_TYPES[compression_named(pulled.media_type)], pulled.size, lid)
    if found is not None and not ws.store.has_layer(lid):  # another shared cache's, never fetched
        ws.images.ensure_layer(lid)
    b = write_layer_to_store(ws.store.layer_path(lid), ws.store.blobs, compression=COMPRESSION,
                             source_date_epoch=source_date_epoch, diff_id=lid)
    return RemoteLayer(b.digest, b.media_type, b.size, b.diff_id, f"sde={source_date_epoch}")
