"""The Python DSL frontend: a ``build.py`` that describes images with an immutable, chainable API.

    from frontends.pydsl import image, cache, secret, target
    app = image("busybox").run("echo hi > /hi", mounts=[cache("/cache")]).cmd(["cat", "/hi"])
    target("default", app)

The API lives in :mod:`.api` (re-exported here); :mod:`.load` executes a build file and compiles
what it declares.  Loading a build file executes its Python, so the frontend declares
``executes_code``: it is chosen only explicitly, and :mod:`.sandbox` runs the file under bubblewrap
(see ``docs/frontends.md``).
``FRONTEND`` is what the ``irctl.frontends`` entry point loads."""

from __future__ import annotations

from typing import TYPE_CHECKING

from frontends.pydsl.api import (DslError, Stage, arg, bind, cache, image, scratch, secret, ssh,  # noqa: F401
                                 target, tmpfs)

if TYPE_CHECKING:
    from frontends import BuildRequest, Compiled, ImageResolver

__all__ = ["Stage", "DslError", "image", "scratch", "arg", "target", "cache", "secret", "bind", "tmpfs", "ssh",
           "FRONTEND"]


class PythonDslFrontend:
    name = "pydsl"
    patterns = ("build.py", "*.build.py", "irctl.py")
    executes_code = True  # chosen only by --frontend pydsl or -f build.py; runs sandboxed (.sandbox)

    def compile(self, request: "BuildRequest", resolver: "ImageResolver") -> "Compiled":
        from frontends.pydsl.sandbox import compile_sandboxed  # lazy: ~80 ms (-X importtime)

        return compile_sandboxed(request, resolver)

    def __repr__(self) -> str:
        return "<frontend pydsl>"


FRONTEND = PythonDslFrontend()
