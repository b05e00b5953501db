from frontends.pydsl import bind, cache, image, tmpfs

deps = image("alpine", name="deps").run("make deps")

final = (image("alpine", name="final")
         .workdir("/app")
         .run("pip install -r requirements.txt", mounts=[bind(source="requirements.txt")])
         .run("cp -r . /opt/deps", mounts=[bind(from_=deps, source="/out")])
         .run("make", mounts=[cache()])
         .run("make check", mounts=[tmpfs()]))

targets = {"default": final}
