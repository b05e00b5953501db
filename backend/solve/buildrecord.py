"""The record of a build, kept per target so the next build can say why a step missed the cache.

A step's cache key is a hash of its parts (``backend.solve.keys``): the op as its handler shows it, what each input
contributes (a content identity, or the checksum of the files the step selects from it) and a few
build options.  The solver hands every step's parts to a :class:`BuildRecord`; ``backend.solve.explain``
compares them part by part with the previous record of the same target, so a miss is explained by
a structured diff rather than a guess.

Layout, under the cache store::

    explain/records/<hex>.json   the last successful build of one target (at most MAX_RECORDS)
    explain/listings/<hex>       path + entry hash of each file a selection held (at most MAX_LISTING)
    explain/salt                 random key of the keyed hashes below

What a record holds is never a secret value: descriptions pass through the build's redactor, an
environment value or a command line is kept only as a keyed hash (``salted``: a guessable build arg
cannot be recovered by hashing guesses without the store's own salt), files as content hashes.  A
build arg's value that the build file expands *into an instruction* is part of that step's
description, as on screen and in the image's history (BuildKit shows it the same way): pass what
must stay hidden as a ``--secret``, never as a ``--build-arg``.
Every file is written to a temporary name and renamed into place, so a killed build leaves the
previous record whole; a record that cannot be read counts as absent.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import tempfile
import threading
import time
import zlib
from pathlib import Path

from ir import ops as irops
from ir.codec import canonical_bytes

VERSION = 1
MAX_RECORDS = 64  # targets remembered; the least recently built is forgotten first
MAX_LISTING = 50_000  # entries of one selection listing; a larger one is not kept (only its digest)
MAX_STEPS = 5_000  # steps of one record
MAX_RECORD_BYTES = 16 << 20  # a record file larger than this is not read


def target_name(kind: str, path: str | os.PathLike, target: str) -> str:
    """What identifies "the same target" across builds: the kind of command, the real path of the
    build file (or IR graph) and the target (stage or root) name."""
    return f"{kind}\0{os.path.realpath(os.fspath(path))}\0{target}"


class Listing(list):
    """The (path, entry hash) pairs of one selection, as the walk yields them; past MAX_LISTING
    entries it stops keeping them (a listing that long is not saved), so a step selecting a million
    files costs no memory here."""

    overflow = False

    def append(self, item) -> None:
        if len(self) < MAX_LISTING:
            super().append(item)
        else:
            self.overflow = True


class BuildRecord:
    """What one build did, step by step; filled by the solver, saved after a successful build."""

    MAX_LISTING = MAX_LISTING

    def __init__(self, name: str, label: str = "") -> None:
        self.name = name
        self.label = label or name.split("\0")[1]  # how the target is named to the user
        self.steps: dict[str, dict] = {}  # op digest -> entry, in the order the steps started
        self.no_cache = False
        self.no_cache_groups: frozenset[str] = frozenset()  # --no-cache-filter
        self.build_args: list[str] = []  # names (never values) of the build args given on the command line
        self.root: Path | None = None
        self._salt = b""
        self._lock = threading.Lock()
        self.previous: dict | None = None

    # -- storage ------------------------------------------------------------------------------
    def open(self, store_root: Path) -> None:
        """Bind to a cache store: read the previous record of this target and the salt."""
        self.root = Path(store_root) / "explain"
        for d in (self.root, self.root / "records", self.root / "listings"):
            d.mkdir(mode=0o700, exist_ok=True)
        self._salt = _salt(self.root / "salt")
        self.previous = self.load()

    def _path(self) -> Path:
        assert self.root is not None
        return self.root / "records" / (hashlib.sha256(self.name.encode("utf-8", "surrogateescape")).hexdigest()[:32]
                                         + ".json")

    def load(self) -> dict | None:
        rec = _read_json(self._path())
        if not isinstance(rec, dict) or rec.get("version") != VERSION or rec.get("name") != self.name \
                or not isinstance(rec.get("steps"), dict) or not all(map(_valid_step, rec["steps"].values())) \
                or not isinstance(rec.get("build_args", []), list) \
                or not all(isinstance(a, str) for a in rec.get("build_args", [])):
            return None
        when = rec.get("time")
        if not isinstance(when, (int, float)) or not 0 <= when < 2**32:  # (NaN fails both) shown as a date
            rec["time"] = None
        return rec

    def save(self) -> None:
        """Write this build as the target's last one (unless it is the same as the one on disk)."""
        if self.root is None:
            return
        steps = dict(list(self.steps.items())[:MAX_STEPS])
        prev = self.previous
        args = sorted(set(self.build_args))
        if prev is not None and prev.get("steps") == steps and prev.get("no_cache") == self.no_cache \
                and prev.get("build_args") == args:
            return  # a rebuild that changed nothing: nothing to write
        rec = {"version": VERSION, "name": self.name, "label": self.label, "time": time.time(),
               "no_cache": self.no_cache, "build_args": args, "steps": steps}
        _write_atomic(self._path(), json.dumps(rec, sort_keys=True, separators=(",", ":")).encode(), sync=False)
        self._forget_old_records()

    def _forget_old_records(self) -> None:
        """Keep the MAX_RECORDS most recently written records and the listings they name; remove
        what killed builds left half-written (a temporary name, never read)."""
        records = sorted((self.root / "records").glob("*.json"), key=_mtime)  # type: ignore[operator]
        for old in records[:-MAX_RECORDS]:
            with contextlib.suppress(OSError):
                old.unlink()
        now = time.time()
        for tmp in [*self.root.glob("*/.tmp-*"), *self.root.glob(".tmp-*")]:  # type: ignore[union-attr]
            if now - _mtime(tmp) > 3600:
                with contextlib.suppress(OSError):
                    tmp.unlink()
        listings = list((self.root / "listings").iterdir())  # type: ignore[operator]
        if len(listings) <= 4 * MAX_RECORDS + 256:
            return
        kept = set()  # listings named by a kept record: its steps' input digests
        for rec in (self.root / "records").glob("*.json"):  # type: ignore[operator]
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                for entry in (_read_json(rec) or {}).get("steps", {}).values():
                    for _, _, part in entry.get("inputs", ()):
                        kept.update(_hex(d) for d in part.removeprefix("selection:").split(","))
        for p in listings:
            if p.name not in kept and now - _mtime(p) > 3600:  # (a running build may not have saved yet)
                with contextlib.suppress(OSError):
                    p.unlink()

    # -- listings -----------------------------------------------------------------------------
    @staticmethod
    def new_listing() -> Listing:
        return Listing()

    def has_listing(self, digest: str) -> bool:
        return self.root is not None and (self.root / "listings" / _hex(digest)).exists()

    def save_listing(self, digest: str, entries: list[tuple[str, str]]) -> None:
        """Remember which paths (with a hash of each entry) the selection ``digest`` held."""
        if self.root is None or len(entries) > MAX_LISTING or getattr(entries, "overflow", False) \
                or self.has_listing(digest):
            return
        text = "".join(f"{h} {path}\n" for path, h in entries if "\n" not in path)
        _write_atomic(self.root / "listings" / _hex(digest),
                      zlib.compress(text.encode("utf-8", "surrogateescape"), 6), sync=False)

    def listing(self, digest: str) -> dict[str, str] | None:
        if self.root is None:
            return None
        try:
            data = zlib.decompressobj().decompress((self.root / "listings" / _hex(digest)).read_bytes(), 64 << 20)
        except (OSError, zlib.error):
            return None
        out = {}
        for line in data.decode("utf-8", "surrogateescape").split("\n"):  # (not splitlines: names hold \x1c, \u2028…)
            if not line:
                continue
            h, _, path = line.partition(" ")
            out[path] = h
        return out

    # -- steps --------------------------------------------------------------------------------
    def salted(self, value: str | bytes) -> str:
        data = value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
        return hmac.new(self._salt, data, hashlib.sha256).hexdigest()[:24]

    def note(self, digest: str, op: irops.Op, body: irops.Op, description: str, group: str, status: str,
             key: str = "", inputs: list[tuple[str, int, str]] | None = None, extra: str = "",
             identities: list[str] | None = None) -> None:
        """Record one step: ``status`` is ``ran``, ``cached`` or ``resolved`` (a source); ``inputs``
        (producer op, output, what it contributed to the key) in input order."""
        entry = {"desc": description, "group": group, "kind": _kind(op), "status": status, "key": key,
                 "body": self.salted(canonical_bytes(body)), "detail": self._detail(op),
                 "extra": self.salted(extra) if extra else "", "inputs": [list(i) for i in inputs or ()],
                 "out": list(identities or ())}
        with self._lock:
            self.steps[digest] = entry

    def _detail(self, op: irops.Op) -> dict:
        """The parts of an op a user would name: what changed in a RUN, which image a FROM is."""
        if op.exec is not None:
            ex = op.exec
            env: dict[str, str] = {}
            for item in ex.env:
                k, _, v = item.partition("=")
                env[k] = self.salted(v)
            h = self.salted
            return {"args": h("\0".join(ex.args)), "env": env, "user": h(ex.user), "cwd": h(ex.cwd),
                    "mounts": h(b"".join(canonical_bytes(m) for m in ex.mounts)),
                    "other": h("\0".join([ex.hostname, ex.network, ex.security]) + _sandbox_text(ex))}
        src = op.source
        if src is not None and src.image is not None:
            return {"ref": src.image.ref, "digest": src.image.digest}
        if src is not None and src.oci_layout is not None:
            return {"ref": f"oci-layout {src.oci_layout.name}:{src.oci_layout.ref}", "digest": src.oci_layout.digest}
        if src is not None and src.local is not None:
            return {"local": src.local.name}
        return {}


_STEP_FIELDS = {"desc": str, "group": str, "kind": str, "status": str, "key": str, "body": str, "detail": dict,
                "extra": str, "inputs": list, "out": list}


def _valid_step(entry: object) -> bool:
    """A step entry as ``note`` writes it (a record edited by hand into another shape is not read)."""
    if not isinstance(entry, dict) or any(not isinstance(entry.get(k), t) for k, t in _STEP_FIELDS.items()):
        return False
    inputs_ok = all(isinstance(i, list) and len(i) == 3 and isinstance(i[0], str) and isinstance(i[1], int)
                    and isinstance(i[2], str) for i in entry["inputs"])
    detail = entry["detail"]
    env = detail.get("env", {})
    return inputs_ok and all(isinstance(o, str) for o in entry["out"]) and isinstance(env, dict) \
        and all(isinstance(v, (str, dict)) for v in detail.values())


def _read_json(path: Path) -> object:
    """A record file's JSON; None when it cannot be read, is larger than MAX_RECORD_BYTES or is not
    JSON (nesting deep enough to exhaust the parser's recursion counts as not JSON)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_RECORD_BYTES + 1)
        return json.loads(data) if len(data) <= MAX_RECORD_BYTES else None
    except (OSError, ValueError, RecursionError):
        return None


def _kind(op: irops.Op) -> str:
    if op.source is None:
        return op.kind
    s = op.source
    return "base" if (s.image or s.oci_layout) else "local" if s.local else "source"


def _hex(digest: str) -> str:
    h = digest.rpartition(":")[2]
    if len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
        return hashlib.sha256(digest.encode()).hexdigest()
    return h


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def _salt(path: Path) -> bytes:
    """The store's random key, made once (linked into place: two first builds agree on one)."""
    for _ in range(2):
        with contextlib.suppress(FileNotFoundError):
            data = path.read_bytes()
            if len(data) == 32:
                return data
            path.unlink()  # a torn or foreign file: made again
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(32))
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    raise OSError(f"cannot make {path}")


def _write_atomic(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Write by rename, so a killed build leaves the old file whole.  ``sync=False`` for what is only
    an aid (a record): after a power loss it may be empty, and an unreadable record counts as absent."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _sandbox_text(ex: irops.ExecOp) -> str:
    """``--add-host``/``--shm-size``/``--ulimit`` of a RUN, in its "other" options; empty when all are
    defaults, so a record written before they existed compares equal."""
    if not (ex.extra_hosts or ex.shm_size or ex.ulimits):
        return ""
    return "\0" + " ".join([*(f"{h.host}={h.ip}" for h in ex.extra_hosts), f"shm={ex.shm_size}",
                            *(f"{u.name}={u.soft}:{u.hard}" for u in ex.ulimits)])
