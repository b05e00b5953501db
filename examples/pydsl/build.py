"""examples/hello's image in the Python DSL (docs/frontends.md): the same graph, digest for digest.

Build it with ``irctl build examples/pydsl`` (``build.py`` is found like a Dockerfile) or run
``examples/pydsl/run.sh``.  Loading this file runs it as Python; the build steps themselves run
only in the solver, isolated, like every other frontend's.
"""

from frontends.pydsl import arg, cache, image, secret, target

BASE = arg("BASE", "busybox")  # --build-arg BASE=… (here: the --build-context of that name)

# Two independent stages: the solver runs them in parallel.
greeting = (image(BASE, name="greeting")
            .workdir("/src")
            .copy("greet.sh", ".")
            .run('sh greet.sh > /greeting.txt && echo "built $(date)" >> /cache/builds.log',
                 mounts=[cache("/cache")]))  # persists between builds, never in the image

about = (image(BASE, name="about")
         .run('test -s /run/secrets/token && echo "built by irctl, with a secret it never stored" > /about.txt',
              mounts=[secret("token", required=True)]))  # --secret id=token,src=…


def collect(stage, *sources):
    """Plain Python composes steps: copy each (stage, path) into /app/."""
    for source, path in sources:
        stage = stage.copy(path, "/app/", from_=source)
    return stage


app = (collect(image(BASE, name="app"), (greeting, "/greeting.txt"), (about, "/about.txt"))
       .env(GREETING_FILE="/app/greeting.txt")
       .cmd(["cat", "/app/greeting.txt", "/app/about.txt"]))

target("default", app)
