from frontends.pydsl import *
image("busybox").copy("a", "/b", from_=3)
