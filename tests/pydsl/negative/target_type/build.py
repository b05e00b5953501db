from frontends.pydsl import *
target("default", "busybox")
