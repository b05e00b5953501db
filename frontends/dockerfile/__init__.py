"""The Dockerfile frontend: parser (parse.py), typed instructions, expansion, .dockerignore, and the
compiler to IR (convert.py).  ``FRONTEND`` is what the ``irctl.frontends`` entry point loads; this
module stays cheap to import — the compiler is imported when ``compile`` is first called."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from frontends import BuildRequest, Compiled, ImageResolver


class DockerfileFrontend:
    name = "dockerfile"
    patterns = ("Dockerfile", "Containerfile", "*.Dockerfile", "*.dockerfile", "Dockerfile.*", "Containerfile.*")

    def compile(self, request: "BuildRequest", resolver: "ImageResolver") -> "Compiled":
        from frontends.dockerfile.convert import compile_dockerfile  # lazy: ~170 ms (-X importtime)

        return compile_dockerfile(request, resolver)

    def __repr__(self) -> str:
        return "<frontend dockerfile>"


FRONTEND = DockerfileFrontend()
