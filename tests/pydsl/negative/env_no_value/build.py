from frontends.pydsl import *
image("busybox").env("A")
