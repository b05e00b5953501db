"""The shared cache's one document: which cache key gave which results, and where their layers are.

A cache written by ``--cache-to`` is this JSON document (``CacheConfig``) plus the layer blobs it
names.  In a registry or a ``type=local`` directory it is the config blob of an OCI image manifest
whose layers are those blobs (``artifactType`` ``ARTIFACT_TYPE``, the shape registries accept for any
artifact); ``type=inline`` puts it in the pushed image's own config under ``INLINE_KEY``, naming that
image's layers.  spec/cache.md describes it for other writers and readers.

Everything here is read from a registry or a directory someone else may control: ``parse`` checks
every field's type and form (digests, sizes, counts, lengths) before anything is used, and says
where the document is wrong.  A reader never trusts it further than its digests: a layer is used
only after its blob hashes to ``blob``, its tar to ``diff_id`` and its extracted tree to its id
(``backend.oci.pull``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from backend.errors import BackendError
from backend.oci.pull import RemoteLayer
from backend.store.records import Output

FORMAT_VERSION = 1
ARTIFACT_TYPE = "application/vnd.irctl.cache.v1"
MT_CONFIG = "application/vnd.irctl.cache.config.v1+json"
INLINE_KEY = "irctl.cache.v1"  # in an image config; another version's key is reported, not read
INLINE_PREFIX = "irctl.cache."
MAX_CONFIG = 32 << 20  # bytes of the document
MAX_RECORDS = 100_000
MAX_LAYERS = 100_000
MAX_TIME = 1 << 63  # ns: any time a clock (and an image's history) can show
MAX_TEXT = 4096  # any one string (a cache mount id, a media type, an action)
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
CONFIG_FIELDS = {"Env": "strings", "Cmd": "strings", "Entrypoint": "strings", "Shell": "strings", "OnBuild": "strings",
                 "User": "string", "WorkingDir": "string", "StopSignal": "string", "Labels": "labels",
                 "ExposedPorts": "set", "Volumes": "set"}  # an image config's fields and their OCI types
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")  # how JSON text spells a surrogate
SELECTION = re.compile(r"(?:sha256|missing):[0-9a-f]{64}")  # backend.solve.keys.InputIdentities


class CacheFormatError(BackendError):
    """A cache document is not one this irctl can read; ``str()`` says where and why."""


@dataclass(frozen=True)
class CacheConfig:
    """``records``: cache key → the outputs it gave; ``selections``: (snapshot identity, selection
    action) → the checksum of what that selection reads (so a key downstream of a result is known
    without its files); ``layers``: layer id → its blob; ``mounts``: cache mount id → a blob of its
    directory; ``platform``: what the writing build ran on."""

    platform: dict = field(default_factory=dict)
    records: dict[str, tuple[Output, ...]] = field(default_factory=dict)
    selections: dict[tuple[str, str], str] = field(default_factory=dict)
    layers: dict[str, RemoteLayer] = field(default_factory=dict)
    mounts: dict[str, RemoteLayer] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "irctl_cache": FORMAT_VERSION,
            "platform": dict(sorted(self.platform.items())),
            "records": [{"key": k, "outputs": [o.to_json() for o in outs]}
                        for k, outs in sorted(self.records.items())],
            "selections": [[i, a, d] for (i, a), d in sorted(self.selections.items())],
            "layers": [{"id": lid, **_layer_json(x)} for lid, x in sorted(self.layers.items())],
            "mounts": [{"id": mid, **_layer_json(x)} for mid, x in sorted(self.mounts.items())],
        }

    def to_bytes(self) -> bytes:
        """Canonical JSON: the same cache gives the same bytes (and an inline cache the same image)."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _layer_json(x: RemoteLayer) -> dict:
    return {"blob": x.blob, "mediaType": x.media_type, "size": x.size, "diff_id": x.diff_id, "variant": x.variant}


def parse(data: bytes | dict, where: str) -> CacheConfig:
    """The document in ``data`` (bytes, or the JSON object an inline cache holds), checked whole."""
    if isinstance(data, (bytes, bytearray)):
        if len(data) > MAX_CONFIG:
            raise CacheFormatError(f"{where}: cache document of {len(data)} bytes (at most {MAX_CONFIG})")
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as e:
            raise CacheFormatError(f"{where}: not JSON: {e}") from None
    else:
        doc = data
    r = _Reader(where)
    r.obj(doc, "document")
    version = doc.get("irctl_cache")
    if type(version) is not int or version != FORMAT_VERSION:
        raise CacheFormatError(f"{where}: cache format {version!r}, this irctl reads format {FORMAT_VERSION} "
                               "(written by another irctl version)")
    platform = doc.get("platform", {})
    r.obj(platform, "platform")
    for k, v in platform.items():
        r.text(k, "platform key")
        r.text(v, f"platform.{k}")
    records: dict[str, tuple[Output, ...]] = {}
    for i, rec in enumerate(r.items(doc.get("records", []), "records", MAX_RECORDS)):
        at = f"records[{i}]"
        r.obj(rec, at)
        key = r.digest(rec.get("key"), f"{at}.key")
        outs = r.items(rec.get("outputs"), f"{at}.outputs", 64)
        records[key] = tuple(r.output(o, f"{at}.outputs[{j}]") for j, o in enumerate(outs))
    selections: dict[tuple[str, str], str] = {}
    for i, sel in enumerate(r.items(doc.get("selections", []), "selections", MAX_RECORDS)):
        at = f"selections[{i}]"
        if not isinstance(sel, list) or len(sel) != 3:
            raise CacheFormatError(f"{where}: {at}: expected [identity, action, checksum]")
        identity = r.digest(sel[0], f"{at}[0]")
        action = r.text(sel[1], f"{at}[1]")
        checksum = sel[2]
        if not isinstance(checksum, str) or not SELECTION.fullmatch(checksum):
            raise CacheFormatError(f"{where}: {at}[2]: not a selection checksum")
        selections[(identity, action)] = checksum
    layers = {r.digest(x.get("id") if isinstance(x, dict) else None, f"layers[{i}].id"): r.layer(x, f"layers[{i}]")
              for i, x in enumerate(r.items(doc.get("layers", []), "layers", MAX_LAYERS))}
    mounts = {r.text(x.get("id") if isinstance(x, dict) else None, f"mounts[{i}].id"): r.layer(x, f"mounts[{i}]")
              for i, x in enumerate(r.items(doc.get("mounts", []), "mounts", 1000))}
    if not isinstance(data, (bytes, bytearray)) or SURROGATE_ESCAPE.search(data):  # (UTF-8 bytes hold none)
        _unicode(doc, where)
    return CacheConfig(platform, records, selections, layers, mounts)


def _unicode(doc: dict, where: str) -> None:
    """Refuse a lone surrogate anywhere (JSON can spell ``\\ud800``; UTF-8 cannot hold it): a build
    taking such a result would fail writing its own cache (``to_bytes``) or image config."""
    try:
        json.dumps(doc, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        at = (_surrogate_at(doc, "") or ".document").lstrip(".")
        raise CacheFormatError(f"{where}: {at}: not valid Unicode text (a lone surrogate)") from None
    except (ValueError, RecursionError):
        raise CacheFormatError(f"{where}: nested too deeply") from None


def _surrogate_at(v: object, at: str) -> str | None:
    """The field of ``v`` whose string (or key) holds a lone surrogate, if any."""
    if isinstance(v, str):
        return at if any(0xD800 <= ord(c) <= 0xDFFF for c in v) else None
    pairs = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
    for k, x in pairs:
        name = f"{at}.{k.encode('utf-8', 'backslashreplace').decode()}" if isinstance(k, str) else f"{at}[{k}]"
        found = _surrogate_at(k, name) if isinstance(k, str) else None
        if found is None:
            found = _surrogate_at(x, name)
        if found is not None:
            return found
    return None


class _Reader:
    """Type and form checks that name the field they refuse."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, at: str, what: str) -> CacheFormatError:
        return CacheFormatError(f"{self.where}: {at}: {what}")

    def obj(self, v: object, at: str) -> dict:
        if not isinstance(v, dict):
            raise self.fail(at, "expected an object")
        return v

    def items(self, v: object, at: str, limit: int) -> list:
        if not isinstance(v, list):
            raise self.fail(at, "expected a list")
        if len(v) > limit:
            raise self.fail(at, f"{len(v)} entries (at most {limit})")
        return v

    def text(self, v: object, at: str, limit: int = MAX_TEXT) -> str:
        if not isinstance(v, str) or not v or len(v) > limit:
            raise self.fail(at, f"expected a non-empty string of at most {limit} characters")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in v):
            raise self.fail(at, "control characters in a string")
        return v

    def digest(self, v: object, at: str) -> str:
        if not isinstance(v, str) or not DIGEST.fullmatch(v):
            raise self.fail(at, "expected a sha256:<64 hex> digest")
        return v

    def count(self, v: object, at: str) -> int:
        if type(v) is not int or v < 1 or v > 1 << 50:  # (no blob of a tar is empty; 0 would mean "unchecked")
            raise self.fail(at, "expected a size in bytes")
        return v

    def layer(self, x: object, at: str) -> RemoteLayer:
        self.obj(x, at)
        assert isinstance(x, dict)
        variant = x.get("variant", "")
        if not isinstance(variant, str) or len(variant) > 64:
            raise self.fail(f"{at}.variant", "expected a short string")
        return RemoteLayer(self.digest(x.get("blob"), f"{at}.blob"), self.text(x.get("mediaType"), f"{at}.mediaType"),
                           self.count(x.get("size"), f"{at}.size"), self.digest(x.get("diff_id"), f"{at}.diff_id"),
                           variant)

    def image_config(self, config: dict, at: str) -> None:
        """The fields an image config gives a build (and the image it exports) have the types the
        OCI image spec says: a cached result never makes an image other tools cannot read."""
        for k, v in config.items():
            kind = CONFIG_FIELDS.get(k)
            ok = (kind is None or v is None  # (docker writes "Labels": null and the like)
                  or (kind == "string" and isinstance(v, str))
                  or (kind == "strings" and isinstance(v, list) and all(isinstance(x, str) for x in v))
                  or (kind == "labels" and isinstance(v, dict) and all(isinstance(x, str) for x in v.values()))
                  or (kind == "set" and isinstance(v, dict) and all(isinstance(x, dict) for x in v.values())))
            if not ok:
                raise self.fail(f"{at}.{k}", {"string": "expected a string", "strings": "expected a list of strings",
                                              "labels": "expected an object of strings",
                                              "set": "expected an object of objects"}[kind])

    def output(self, o: object, at: str) -> Output:
        self.obj(o, at)
        assert isinstance(o, dict)
        self.digest(o.get("identity"), f"{at}.identity")
        layers = self.items(o.get("layers"), f"{at}.layers", 1000)
        for j, lid in enumerate(layers):
            self.digest(lid, f"{at}.layers[{j}]")
        image = o.get("image")
        if image is not None:
            self.obj(image, f"{at}.image")
            self.image_config(self.obj(image.get("config"), f"{at}.image.config"), f"{at}.image.config")
            for j, h in enumerate(self.items(image.get("history", []), f"{at}.image.history", 10_000)):
                self.obj(h, f"{at}.image.history[{j}]")
            for k, v in self.obj(image.get("platform", {}), f"{at}.image.platform").items():
                if not isinstance(v, (str, list)):
                    raise self.fail(f"{at}.image.platform.{k}", "expected a string")
        created = o.get("created", [])
        if not isinstance(created, list) or any(t is not None and (type(t) is not int or not 0 <= t < MAX_TIME)
                                                 for t in created):  # (shown in image histories: a clock's)
            raise self.fail(f"{at}.created", "expected a list of times (ns since 1970, before 2262) or nulls")
        return Output.from_json(o)
