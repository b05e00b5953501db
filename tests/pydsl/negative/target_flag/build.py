from frontends.pydsl import *
target("default", image("busybox"))
target("test", image("alpine"))
