from frontends.pydsl import *
app = (image("busybox")
       .run("x", mounts=[cache("/c", sharing="lockd")]))
target("default", app)
