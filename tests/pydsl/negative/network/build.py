from frontends.pydsl import *
app = image("busybox").run("x", network="hots")
target("default", app)
