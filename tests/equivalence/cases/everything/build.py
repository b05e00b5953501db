from frontends.pydsl import arg, bind, cache, image, secret, ssh, target, tmpfs

BASE = arg("BASE", "alpine")

tools = (image(BASE, name="tools")
         .arg("VERSION", "1.0")
         .env(TOOL_VERSION=arg("VERSION", "1.0"), MODE="release")
         .label({"org.opencontainers.image.title": "tools", "tier": "build"})
         .workdir("work")
         .user("1000:1000")
         .run("make tools", network="none",
              mounts=[cache("/var/cache/apk", id="apk", sharing="locked", mode=0o700, uid=1000),
                      tmpfs("/scratch", size="64m")])
         .run(["/bin/echo", "exec", "form"])
         .user("root"))

assets = (tools.stage("assets")
          .shell(["/bin/bash", "-o", "pipefail", "-c"])
          .run("npm ci | tee log",
               mounts=[secret("npm", env="NPM_TOKEN"), ssh(required=True),
                       bind("/mnt/tools", from_=tools, source="/work")])
          .copy(["a.txt", "b.txt"], "/assets/", chown="1000:1000", chmod="0644")
          .copy("/work", "/linked/", from_=tools, link=True)
          .add("https://example.com/f.tar.gz", "/dl/",
               checksum="sha256:0000000000000000000000000000000000000000000000000000000000000000"))

final = (image("busybox", name="final")
         .copy("/assets", "/srv/assets", from_=assets)
         .maintainer("someone@example.com")
         .copy([], "/etc/", inline={"motd": "Welcome, C.UTF-8\n", "banner": "$ not expanded\n"})
         .onbuild("RUN make plugins")
         .expose(8080, "53/udp")
         .volume("/data", "/cache")
         .stopsignal("SIGTERM")
         .healthcheck("wget -q -O- http://localhost:8080/", interval=30, timeout=3, retries=3)
         .entrypoint(["/bin/server"])
         .cmd("serve --port 8080"))

targets = {"default": final}
