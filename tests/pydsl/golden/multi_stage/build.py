"""The equivalence image, in the Python DSL."""
from frontends.pydsl import cache, image, secret, target

build = (image("busybox", name="build")
         .workdir("/src")
         .copy("greet.sh", ".")
         .run("sh greet.sh > /greeting.txt && test -s /run/secrets/token && date >> /cache/builds.log",
              mounts=[cache("/cache"), secret("token", required=True)]))

app = (image("busybox", name="app")
       .copy("/greeting.txt", "/app/", from_=build)
       .env(GREETING_FILE="/app/greeting.txt")
       .workdir("/app")
       .cmd(["cat", "/app/greeting.txt"]))

target("default", app)
