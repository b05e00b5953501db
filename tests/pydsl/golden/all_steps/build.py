"""Every method of the DSL, every mount helper, build args and a named target."""
from frontends.pydsl import arg, bind, cache, image, scratch, secret, ssh, target, tmpfs

REGISTRY = arg("REGISTRY", "127.0.0.1:5000")
GREETING = arg("GREETING", "hello")

src = (scratch(name="src")
       .add("https://github.com/example/app.git#v1.2:src", "/src", keep_git_dir=True)
       .copy("web/./assets/*.css", "/static/", parents=True, exclude=["*.map"]))

app = (image(f"{REGISTRY}/busybox:latest", name="app", platform="linux/arm64/v8")
       .arg("GREETING")
       .env(HOME="/home/app", PATH="/home/app/bin:/usr/local/bin:/usr/bin:/bin")
       .workdir("/home/app")
       .run(["sh", "-c", "echo $GREETING > greeting"], env={"ONLY_HERE": "1"}, workdir="sub", user="nobody",
            security="insecure")
       .run("ls /ctx /seed",
            mounts=[bind("/ctx", rw=True),
                    cache("/seed", from_=src, source="/src", id="seeded", readonly=True),
                    secret("gh", "/etc/gh", mode=0o440, uid=1, gid=2),
                    ssh("deploy"),
                    ssh(),
                    tmpfs("/tmp", size="64m")])
       .copy("/static", "static/", from_=src, chown="app:app", chmod="0755", link=True)
       .add("dist.tar.gz", "/opt/", unpack=False)
       .healthcheck(None)
       .volume("/home/app/data")
       .shell(["/bin/ash", "-c"])
       .env("MODE", "production")
       .label({"org.opencontainers.image.version": GREETING})
       .user("app")
       .expose(8080)
       .stopsignal("SIGINT")
       .healthcheck(["/bin/check", "--quick"], interval=90, start_period=5, retries=2)
       .entrypoint("exec server")
       .cmd(["--verbose"]))

target("default", app)
target("sources", src)
