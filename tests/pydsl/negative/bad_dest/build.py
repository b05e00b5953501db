from frontends.pydsl import *
app = image("busybox").copy("a", 3)
