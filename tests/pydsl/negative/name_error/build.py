from frontends.pydsl import *
app = image("busybox").run(mak)
