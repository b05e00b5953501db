from frontends.pydsl import *
app = image("nosuch")
target("default", app)
