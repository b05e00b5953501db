"""The filesystems a stage starts from or reads, as every step-by-step frontend resolves them.

A name that is not a stage is ``scratch``, a ``--build-context`` (matched by the image's
familiar names), or a registry image resolved through the frontend's ``ImageResolver`` and
pinned by digest; an image without layers is scratch.  Re-exported by :mod:`frontends.common.stage`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from frontends.common.errors import StageError
from frontends.common.image_config import ImageState, is_empty_image
from frontends.errors import SourceError
from ir import builder, ops


@dataclass
class Source:
    """A filesystem a stage starts from or reads: an image, a named context, scratch."""

    state: builder.State
    image: ImageState
    platform: ops.Platform
    description: str = ""  # "FROM ref@digest", for progress ("" when not a step of its own)


def resolve_source(request, resolver, ref: str, platform: ops.Platform,
                   locations: Sequence[ops.Location] = ()) -> Source:
    """What a name that is not a stage means, as BuildKit reads it: ``scratch``; a named context
    given with ``--build-context`` (``ref`` or ``ref`` without ``:latest``); else a registry image
    resolved through ``resolver`` and pinned by digest (an image without layers is scratch)."""
    if ref == "scratch":
        return Source(builder.scratch(), ImageState(), platform, "FROM scratch")
    ctx = next((request.contexts[n] for n in familiar_names(ref) if n in request.contexts), None)
    if ctx is not None:
        return named_context(request, resolver, ref, ctx, platform, locations)
    try:
        resolved = resolver.resolve_image(ref, platform)
    except SourceError:
        raise
    except Exception as e:  # the resolver is the backend's; the caller adds our location
        raise StageError(f"image {ref}: {e}") from None
    return image_source(resolved, platform, locations)


def image_source(resolved, platform: ops.Platform, locations: Sequence[ops.Location] = ()) -> Source:
    """A resolved registry image as a source op pinned by digest (one without layers is scratch)."""
    plat = resolved.platform or platform
    if is_empty_image(resolved.config):
        return Source(builder.scratch(), ImageState.from_oci(resolved.config), plat, "")
    desc = f"FROM {resolved.ref}" + (f"@{resolved.digest}" if resolved.digest else "")
    state = builder.image(resolved.ref, digest=resolved.digest, platform=plat,
                          meta=ops.OpMetadata(desc, locations=tuple(locations)))
    return Source(state, ImageState.from_oci(resolved.config), plat, desc)


def named_context(request, resolver, name: str, ctx, platform: ops.Platform,
                  locations: Sequence[ops.Location] = ()) -> Source:
    """``--build-context NAME=…``: a local directory, an image, or an image in an OCI layout."""
    loc = tuple(locations)
    if ctx.kind == "local":
        return Source(builder.local(name, meta=ops.OpMetadata(f"[context {name}] load build context", locations=loc)),
                      ImageState(), platform)
    try:
        if ctx.kind == "image":
            r = resolver.resolve_image(ctx.value, platform)
            desc = f"[context {name}] FROM {r.ref}@{r.digest}"
            state = builder.image(r.ref, digest=r.digest, platform=r.platform or platform,
                                  meta=ops.OpMetadata(desc, locations=loc))
        elif ctx.kind == "oci_layout":
            r = resolver.resolve_oci_layout(name, ctx.value, platform)
            desc = f"[context {name}] oci-layout {ctx.value}@{r.digest}"
            state = builder.oci_layout(name, ref=ctx.value, digest=r.digest, platform=r.platform or platform,
                                       meta=ops.OpMetadata(desc, locations=loc))
        else:
            raise StageError(f"named context {name}: unknown kind {ctx.kind!r}")
    except (SourceError, StageError):
        raise
    except Exception as e:
        raise StageError(f"named context {name}: {e}") from None
    return Source(state, ImageState.from_oci(r.config), r.platform or platform)


def familiar_names(ref: str) -> list[str]:
    """Names a ``--build-context`` may use for an image reference (dockerui ``NamedContext``:
    the familiar form, without ``:latest``): ``docker.io/library/alpine:latest`` → ``alpine``."""
    names = [ref]
    short = ref
    for prefix in ("docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/"):
        if short.startswith(prefix):
            short = short[len(prefix):]
            break
    for n in (short, short.removesuffix(":latest")):
        if n not in names:
            names.append(n)
    return names
