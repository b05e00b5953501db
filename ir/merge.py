"""Several single-root documents (one per target and platform of a build) merged into one.

Ops are keyed by digest, so a step every platform shares — a stage ``FROM --platform=$BUILDPLATFORM``,
a base image both targets start from — is one op in the result and the solver runs it once.
Per-op metadata is not hashed and may differ between the parts (a description saying the platform):
the first part's is kept.  Source files are deduplicated by name and contents, and each kept
``Location`` is re-pointed at its file's index in the merged ``sources``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ir import features, ops
from ir.roots import platform_string


def merge(parts: Sequence[tuple[str, ops.Document]]) -> ops.Document:
    """One document whose root ``name`` is the single root of each ``(name, document)`` part."""
    op_map: dict[str, ops.Op] = {}
    metadata: dict[str, ops.OpMetadata] = {}
    sources: dict[tuple[str, str, bytes], int] = {}
    roots: dict[str, ops.Ref] = {}
    for name, doc in parts:
        if len(doc.roots) != 1:
            raise ValueError(f"merging {name!r}: a part must have exactly one root, not {len(doc.roots)}")
        if name in roots:
            raise ValueError(f"merging: two parts named {name!r}")
        (roots[name],) = doc.roots.values()
        index = [sources.setdefault((f.name, f.language, f.data), len(sources)) for f in doc.sources]
        for digest, op in doc.ops.items():
            op_map.setdefault(digest, op)
        for digest, meta in doc.metadata.items():
            if digest not in metadata:
                metadata[digest] = _reindexed(meta, index) if meta.locations else meta
    files = tuple(ops.SourceFile(name, language, data) for name, language, data in sources)
    return ops.Document(version=1, ops=op_map, roots=roots, features=features.used_by(op_map),
                        metadata=metadata, sources=files)


def _reindexed(meta: ops.OpMetadata, index: list[int]) -> ops.OpMetadata:
    return ops.replace(meta, locations=tuple(ops.replace(loc, file=index[loc.file]) for loc in meta.locations))


def label_platform(doc: ops.Document, platform: ops.Platform) -> ops.Document:
    """The document with each ``[stage n/m] …`` description saying its platform as BuildKit's do
    in a multi-platform build (``[linux/arm64 build 2/3] RUN …``): an exec's own platform, an
    image's, else ``platform`` (the one the document was compiled for).  An image op's
    (``exporting image config of …``) gets ``[os/arch]`` before it, so each platform's reads apart."""
    metadata = {}
    for digest, meta in doc.metadata.items():
        op, text = doc.ops[digest], meta.description
        if op.image is not None and text and not text.startswith("["):
            meta = ops.replace(meta, description=f"[{platform_string(op.image.platform)}] {text}")
        elif text.startswith("[") and not text.startswith("[internal]"):
            p = (op.exec.platform if op.exec is not None else
                 op.source.image.platform if op.source is not None and op.source.image is not None else platform)
            meta = ops.replace(meta, description=f"[{platform_string(p)} {text[1:]}")
        metadata[digest] = meta
    return ops.replace(doc, metadata=metadata)
