"""A REAPI server's action cache as a shared cache (``--remote-cache``): looked up step by step, filled
with what runs here.

Set up once per solve (``connect``): a server that cannot be reached, or that does not hash with
SHA256, leaves the build local with a warning; one that refuses action cache updates is read only.
Each step the local store misses is looked up under its cache action (``results.cache_action``);
a result is decoded strictly and its layers made known to the image resolver, fetched only when
something reads them.  A result the server holds that irctl cannot use is a miss with a warning.

After a step runs here, its result is uploaded in the background (a pool the solver joins when
the solve ends): its layers' blobs (``cas.ensure_in_cas``), result.json, the action's blobs, then
the action cache entry.  An upload that fails is a warning, and nothing more is uploaded: a cache
never fails a build.  A layer holding a secret value of the build (``backend.ops.secretscan``; or in a
path, link target or extended attribute, which its tar carries too) is never uploaded, nor its
result; cache mounts never are.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from backend.errors import BackendError
from backend.events import Event
from backend.farm import FarmOptions
from backend.farm.cas import ensure_in_cas
from backend.fs import safefs
from backend.farm.results import ResultError, cache_action, decode_result, encode_result
from backend.ops import secretscan
from backend.output import Redactor
from backend.reapi.client import Remote
from backend.reapi.errors import BlobMismatch, BlobNotFound, RemoteError, Unreachable
from backend.store.records import Output

UPLOADERS = 2  # results uploaded at once (each mostly waits on the network or on gzip)


def connect(options: FarmOptions, ws, emit: Callable[[Event], None]) -> "ReapiCache | None":
    """The remote cache ``options`` names for the solve of ``ws``, or None (said in a warning) when
    its server cannot serve as one."""
    assert options.cache is not None
    url = options.cache.url
    remote = Remote(options.cache)
    try:
        caps = remote.capabilities()
    except RemoteError as e:
        remote.close()
        why = _reason(e, url)
        if isinstance(e, Unreachable):  # (its text: "cannot reach it (connection refused)")
            why = f"cannot reach the server ({why.removeprefix('cannot reach it (').removesuffix(')')})"
        emit(Event("info", text=f"warning: --remote-cache {url}: {why}; building locally"))
        return None
    upload = options.upload
    if upload and not caps.ac_update:
        emit(Event("info", text=f"warning: --remote-cache {url}: the server refuses action cache updates; "
                                "reading only"))
        upload = False
    return ReapiCache(remote, url, ws, emit, upload=upload, source_date_epoch=options.source_date_epoch)


def _reason(e: Exception, url: str) -> str:
    """``e`` without the client's "REAPI server URL: " prefix (the warning names the server)."""
    text = str(e)
    return text.split(": ", 1)[1] if text.startswith(f"REAPI server {url}: ") else text


class ReapiCache:
    """One server's action cache, a live source of ``backend.remotecache.sources.RemoteCache``."""

    flag = "--remote-cache"

    def __init__(self, remote: Remote, url: str, ws, emit: Callable[[Event], None], *, upload: bool,
                 source_date_epoch: int | None = None) -> None:
        self.remote, self.name, self.ws, self.emit = remote, url, ws, emit
        self.origin = ("reapi", remote)
        self.upload, self.source_date_epoch = upload, source_date_epoch
        self._lock = threading.Lock()
        self._reading = True
        self._pool = ThreadPoolExecutor(max_workers=UPLOADERS, thread_name_prefix="reapi-upload") if upload else None
        self._uploading = upload  # False after an upload failed
        self._pending: list[Future] = []
        self._clean: set[str] = set()  # layers scanned for secret values, none found
        self._leaks: set[str] = set()  # layers holding one (said once)
        self.uploaded = 0

    def _warn(self, text: str) -> None:
        self.emit(Event("info", text=f"warning: {self.flag} {self.name}: {text}"))

    # -- lookups -------------------------------------------------------------------------------
    def lookup(self, key: str) -> tuple[Output, ...] | None:
        """The outputs the server holds for ``key`` (their layers made known to the image resolver)."""
        with self._lock:
            if not self._reading:
                return None
        action, _ = cache_action(key)
        try:
            result = self.remote.get_action_result(action)
            if result is None:
                return None
            outputs, layers = decode_result(self.remote, result)
        except (ResultError, BlobNotFound, BlobMismatch) as e:  # this result's, not the server's fault
            self._warn(f"its result for {key[:19]}… is unusable ({_reason(e, self.name)}); running that step here")
            return None
        except RemoteError as e:
            with self._lock:
                said, self._reading = not self._reading, False
            if not said:
                self._warn(f"{_reason(e, self.name)}; looking nothing more up there")
            return None
        self.ws.images.add_remote(layers, {}, self.origin)
        return tuple(outputs)

    # -- uploads -------------------------------------------------------------------------------
    def ran(self, key: str, outputs: Sequence[Output]) -> None:
        """Upload, in the background, the result of a step that ran here."""
        with self._lock:
            if self._pool is None or not self._uploading:
                return
            self._pending.append(self._pool.submit(self._upload, key, tuple(outputs)))

    def _upload(self, key: str, outputs: tuple[Output, ...]) -> None:
        with self._lock:  # queued before an upload failed (each would wait out its own deadline) or
            if not self._uploading:  # before Ctrl-C (see close)
                return
        ids = list(dict.fromkeys(lid for o in outputs for lid in o.layers))
        try:
            leak = self._secret_in(ids)
            if leak is not None:
                with self._lock:
                    said = leak in self._leaks
                    self._leaks.add(leak)
                if not said:
                    self._warn(f"a step wrote a secret value of this build into its layer {leak}; no result "
                               "naming that layer is uploaded")
                return
            layers = ensure_in_cas(self.ws, self.remote, ids, source_date_epoch=self.source_date_epoch)
            result, blobs = encode_result(outputs, layers)
            action, more = cache_action(key)
            blobs.update(more)
            for digest in self.remote.find_missing(set(blobs)):
                self.remote.upload_bytes(blobs[digest])
            self.remote.update_action_result(action, result)
        except (BackendError, OSError, ValueError) as e:
            with self._lock:
                said, self._uploading = not self._uploading, False
            if not said:
                text = _reason(e, self.name) if isinstance(e, BackendError) else f"{e.strerror or e}"
                self._warn(f"uploading a result failed ({text}); uploading nothing more")
            return
        with self._lock:
            self.uploaded += 1

    def _secret_in(self, ids: list[str]) -> str | None:
        """The first layer of ``ids`` that holds a secret value of the build, if any: one built here,
        or one another shared cache gave (an earlier build with the same secret may have written it
        there, with a warning).  A base image's layers, and those this server named (its CAS has
        them), are not looked at."""
        redactor = self.ws.redactor
        if not redactor:
            return None
        store = self.ws.store
        for lid in ids:
            with self._lock:
                if lid in self._leaks:
                    return lid
                if lid in self._clean:
                    continue
            found = self.ws.images.remote_layer(lid)
            if store.layer_blob(lid) is None and (found is None or not self._served_here(found[1])):
                path = self.ws.images.ensure_layer(lid) if found is not None else store.layer_path(lid)
                if secretscan.find(redactor, path) or _named(redactor, path):
                    return lid
            with self._lock:
                self._clean.add(lid)
        return None

    def _served_here(self, origin) -> bool:
        return origin[0] == "reapi" and getattr(origin[1], "endpoint", None) == self.remote.endpoint

    def close(self, *, interrupted: bool = False) -> None:
        """Wait for the uploads (the solve is over), say what went up, and let the server go.
        ``interrupted`` (Ctrl-C): only those under way are waited for, the queued ones are dropped
        (each would compress layers and wait on the network while the user waits)."""
        with self._lock:
            pool, pending = self._pool, list(self._pending)
            if interrupted:
                self._uploading = False
        for f in pending:
            try:
                f.result()
            except Exception as e:  # a fault of ours in an upload: said, never a failed build
                self._warn(f"uploading a result failed ({type(e).__name__}: {e})")
        if pool is not None:
            pool.shutdown(wait=True)
        if self.uploaded:
            self.emit(Event("info", text=f"remote cache {self.name}: {self.uploaded} results uploaded"))
        self.remote.close()


def _named(redactor: Redactor, root) -> bool:
    """Whether a path, link target or extended attribute under ``root`` holds a secret value: a
    layer's tar carries them as it carries contents (``secretscan.find`` reads contents only).
    An unreadable tree is an ``OSError``: the caller uploads nothing more."""
    redactor = Redactor(f for f in redactor.forms if len(f) >= secretscan.MIN_LENGTH)
    if not redactor:
        return False
    for entry in safefs.walk(root, sort=False):
        if redactor.found_in(entry.rel):
            return True
        if stat.S_ISLNK(entry.st.st_mode) and redactor.found_in(entry.readlink()):
            return True
        for attr in os.listxattr(entry.xpath, follow_symlinks=False):
            if redactor.found_in(os.fsencode(attr) + b"=" + os.getxattr(entry.xpath, attr, follow_symlinks=False)):
                return True
    return False
