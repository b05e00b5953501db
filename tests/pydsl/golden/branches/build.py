"""One stage value continued two ways: the shared steps are one set of ops in the graph."""
from frontends.pydsl import image

base = image("alpine").workdir("/src").copy(".", ".").run("make deps")
test = base.run("make test")
release = base.run("make release").cmd(["/src/app"])


def tests_pass(stage):
    """Helpers are plain Python; the source map points at the line inside the helper."""
    return stage.run("make check")


targets = {"default": tests_pass(release), "test": test}
