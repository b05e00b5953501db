from frontends.pydsl import *
image("busybox").cmd([])
