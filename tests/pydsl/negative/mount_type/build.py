from frontends.pydsl import *
app = image("busybox").run("x", mounts=["type=cache"])
target("default", app)
