"""``--provenance``, ``--sbom`` and ``--attest`` (buildx's forms) and the statements hook
``irctl.exporting.export`` takes.

``--provenance`` takes ``true`` (= ``mode=min``), ``false``, ``min``, ``max`` or ``mode=min|max``
(with ``version=v0.2``, the only version written). Not given: no provenance. buildx's default for
``docker buildx build`` is ``mode=min`` on image outputs, but it turns every single-platform image
into an index (an attestation needs one), changing every digest and what older registries and
tools accept: here it is asked for, never implied.

A hook is ``(platform, snapshot) -> [(predicate_type, predicate), …]``; ``chain`` joins several
(provenance, an SBOM, …) into the one ``export`` takes.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace

from irctl.errors import UserError


_SWITCH = {"true": True, "1": True, "false": False, "0": False, "": False}  # buildx's on/off spellings


def provenance_mode(value: str | None) -> str | None:
    """``min``, ``max``, or None (no provenance) for a ``--provenance`` value."""
    if value is None:
        return None
    v = value.strip().lower()
    if v in _SWITCH:
        return "min" if _SWITCH[v] else None
    if v in ("min", "max"):
        return v
    mode = "min"
    for field in v.split(","):
        key, eq, val = field.partition("=")
        if key == "mode" and val in ("min", "max"):
            mode = val
        elif key == "version" and val in ("v0.2", "v02"):
            continue
        elif key == "disabled" and val in ("true", "false"):
            if val == "true":
                return None
        else:
            raise UserError(f"--provenance {value!r}: want true, false, min, max or mode=min|max"
                            + (" (only version=v0.2 is written)" if key == "version" else ""))
    return mode


def provenance_hook(mode: str, document, root: str, *, frontend: str, target: str, build_args):
    """The hook writing a SLSA provenance of each image: ``root`` is the document's root name for
    one platform (``default``, or the target); with several platforms each image's root is
    ``ROOT@platform`` (the merged document's naming)."""
    from backend.export.image import rfc3339_ns  # lazy: only with --provenance
    from backend.export.provenance import PREDICATE_TYPE, Invocation, predicate  # lazy: as above
    from irctl.metadata import build_id, started_ns  # lazy: as above

    reproducible = bool(os.environ.get("SOURCE_DATE_EPOCH"))  # no times, no random id: same bytes each build
    language = document.sources[0].language if document.sources else ""
    base = Invocation(frontend=frontend or language or "dockerfile", target=target, build_args=tuple(build_args),
                      invocation_id="" if reproducible else build_id(),
                      started="" if reproducible else rfc3339_ns(started_ns()))

    def statements(platform: str, snapshot) -> list[tuple[str, dict]]:
        names = (f"{root}@{platform}", root, f"default@{platform}", "default")
        name = next((n for n in names if n in document.roots), root)
        now = replace(base, finished="" if reproducible else rfc3339_ns(time.time_ns()))
        return [(PREDICATE_TYPE, predicate(document, name, platform, now, mode))]

    return statements


def sbom_wanted(value: str | None) -> bool:
    """``--sbom`` (buildx: ``true``, ``false``, or attributes such as ``generator=IMAGE``). irctl's SBOM
    is read from the image's package databases by irctl itself (``backend.export.sbom``): there is no
    scanner image to pick, so ``generator=`` is refused rather than ignored."""
    if value is None:
        return False
    v = value.strip().lower()
    if v in _SWITCH:
        return _SWITCH[v]
    for field in v.split(","):
        key, _, val = field.partition("=")
        if key == "disabled" and val in ("true", "false"):
            return val == "false"
        if key == "generator":
            raise UserError(f"--sbom {value!r}: irctl writes its own SBOM from the image's package databases "
                            "(dpkg, apk, Python, npm); generator= (a scanner image) is not supported")
        raise UserError(f"--sbom {value!r}: want true or false")
    return True


def attest_options(values: list[str], provenance: str | None, sbom: str | None) -> tuple[str | None, bool]:
    """``--attest type=provenance[,mode=…]|type=sbom[,…]`` folded into ``--provenance``/``--sbom`` (buildx:
    those two are its shorthands; the shorthand wins when both are given): the provenance mode (None:
    none) and whether an SBOM is wanted."""
    mode, wanted = provenance_mode(provenance), sbom_wanted(sbom)
    for value in values:
        fields = [f for f in value.split(",") if f]
        kind = next((f.partition("=")[2] for f in fields if f.startswith("type=")), "")
        rest = ",".join(f for f in fields if not f.startswith("type=")) or "true"
        if kind == "provenance":
            mode = mode if provenance is not None else provenance_mode(rest)
        elif kind == "sbom":
            wanted = wanted if sbom is not None else sbom_wanted(rest)
        else:
            raise UserError(f"--attest {value!r}: want type=provenance[,mode=min|max] or type=sbom")
    return mode, wanted


def sbom_hook(name: str, emit):
    """The hook writing an SPDX SBOM of each image from its package databases (``backend.export.sbom``);
    ``name`` names the image in the document (its first tag). Dated ``SOURCE_DATE_EPOCH`` or the epoch:
    the same image gives the same bytes."""
    from backend.export.sbom import PREDICATE_TYPE, sbom_predicate  # lazy: only with --sbom

    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    created = int(epoch) if epoch.isdigit() else None

    def statements(platform: str, snapshot) -> list[tuple[str, dict]]:
        return [(PREDICATE_TYPE, sbom_predicate(snapshot.layers, name=name, created=created, warn=emit))]

    return statements


def chain(*hooks):
    """One hook giving every statement of ``hooks`` (None ones skipped), or None when there is none."""
    live = [h for h in hooks if h is not None]
    if not live:
        return None
    return lambda platform, snapshot: [s for h in live for s in h(platform, snapshot)]
