"""Compile a TOML recipe to an IR document: read it (:mod:`.recipe`), lower it with the stage
functions every frontend shares (:mod:`frontends.common.lower`)."""

from __future__ import annotations

from frontends import BuildRequest, Compiled, ImageResolver
from frontends.common.lower import RecipeError, lower
from frontends.common.model import Where
from frontends.toml.recipe import read_recipe
from ir import ops


def compile_recipe(request: BuildRequest, resolver: ImageResolver) -> Compiled:
    """The recipe in ``request`` as a document whose ``default`` root is the target image."""
    try:
        text = request.source.decode("utf-8")
    except UnicodeDecodeError as e:
        line = request.source[: e.start].count(b"\n") + 1
        raise RecipeError(f"invalid UTF-8 (byte 0x{request.source[e.start]:02x})", Where(request.filename, line)) from None
    recipe = read_recipe(text, request.filename)
    return lower(recipe, request, resolver, [ops.SourceFile(request.filename, "toml", request.source)])
