"""``--provenance`` (buildx's forms) and the statements hook ``irctl.exporting.export`` takes.

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


def provenance_mode(value: str | None) -> str | None:
    """``min``, ``max``, or None (no provenance) for a ``--provenance`` value."""
    if value is None:
        return None
    v = value.strip().lower()
    if v in ("false", "0", ""):
        return None
    if v in ("true", "1"):
        return "min"
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


def chain(*hooks):
    """One hook giving every statement of ``hooks`` (None ones skipped), or None when there is none."""
    live = [h for h in hooks if h is not None]
    if not live:
        return None
    return lambda platform, snapshot: [s for h in live for s in h(platform, snapshot)]
