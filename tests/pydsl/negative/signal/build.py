from frontends.pydsl import *
target("default", image("busybox").stopsignal("SIGFOO"))
