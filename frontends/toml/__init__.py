"""The TOML recipe frontend (``spec/recipe.md``): ``irctl.toml``, ``*.irctl.toml``, ``recipe.toml``.

``FRONTEND`` is what the ``irctl.frontends`` entry point loads; importing this module is cheap —
the reader and compiler are imported when ``compile`` is first called."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from frontends import BuildRequest, Compiled, ImageResolver


class TomlFrontend:
    name = "toml"
    patterns = ("irctl.toml", "recipe.toml", "*.irctl.toml", "*.recipe.toml")

    def compile(self, request: "BuildRequest", resolver: "ImageResolver") -> "Compiled":
        from frontends.toml.convert import compile_recipe  # lazy: ~200 ms (-X importtime)

        return compile_recipe(request, resolver)

    def __repr__(self) -> str:
        return "<frontend toml>"


FRONTEND = TomlFrontend()
