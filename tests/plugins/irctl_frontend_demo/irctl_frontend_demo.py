"""A toy frontend: a ``*.greet`` file says which image to start from and what to say.

    from busybox
    say hello
    say world

becomes an image whose ``/greetings`` holds the lines and whose command prints them.  It uses
only the public contract (``frontends.BuildRequest``, ``ImageResolver``, ``Compiled``) and the
IR builder, as any third-party frontend would.
"""

from __future__ import annotations

from frontends import BuildRequest, Compiled, FrontendError, ImageResolver
from ir import builder, ops


class DemoFrontend:
    name = "demo"
    patterns = ("*.greet",)

    def compile(self, request: BuildRequest, resolver: ImageResolver) -> Compiled:
        lines = request.source.decode().splitlines()
        state = None
        sources = (ops.SourceFile(request.filename, "greet", request.source),)
        for n, line in enumerate(lines, 1):
            word, _, rest = line.strip().partition(" ")
            loc = ops.OpMetadata(line.strip(), "greet", (ops.Location(0, n),))
            if not word or word.startswith("#"):
                continue
            if word == "from":
                ctx = request.contexts.get(rest)
                if ctx is not None and ctx.kind == "oci_layout":
                    r = resolver.resolve_oci_layout(rest, ctx.value, request.platform)
                    state = builder.oci_layout(rest, ref=ctx.value, digest=r.digest, meta=loc)
                else:
                    r = resolver.resolve_image(rest, request.platform)
                    state = builder.image(r.ref, digest=r.digest, meta=loc)
            elif word == "say" and state is not None:
                state = state.run(["/bin/sh", "-c", 'echo "$0" >> /greetings', rest],
                                  env=("PATH=/usr/bin:/bin",), meta=loc)
            else:
                raise FrontendError(f"{request.filename}:{n}: expected `from IMAGE` then `say TEXT` lines")
        if state is None:
            raise FrontendError(f"{request.filename}:1: nothing to build")
        image = state.with_image(ops.ImageConfig(cmd=("cat", "/greetings")))
        return Compiled(builder.build_document({"default": image}, sources))


FRONTEND = DemoFrontend()
