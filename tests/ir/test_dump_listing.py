"""``irctl dump``'s text view of real Dockerfile shapes: each stage's heading once (stages in source
order), a base image shared by several stages under the first stage reading it, scripts one line per
line, the environment each RUN changes, a ``--link`` copy's empty base, roots named by target (and
platform), and ``--no-trunc``. Each listing is exact, and each was compared with the one before."""

from __future__ import annotations

import re
from pathlib import Path

from frontends import BuildRequest
from frontends.dockerfile import FRONTEND
from ir import builder as b
from ir import codec, ops, render
from irctl.dump import text_listing
from tests.ir.strategies import D1
from tests.support.ir_cli import app, runner
from tests.support.resolver import FakeResolver


def listing(dockerfile: str) -> str:
    return text_listing(FRONTEND.compile(BuildRequest(dockerfile.encode()), FakeResolver()).document)


SHARED_BASE = """\
FROM alpine AS a
RUN make a
FROM alpine AS b
RUN make b
FROM b
COPY --from=a /a /a
COPY --from=alpine /etc/os-release /
"""


def test_each_stage_once_and_a_shared_base_under_its_first_stage() -> None:
    """Before: `[a]` (with stage b's line 3), `[b]`, `[a]` again — alpine filed under whichever stage
    the frontend met last, and stage a split in two around it."""
    assert listing(SHARED_BASE) == """\
6 ops, 1 roots, features: exec, file.copy, image, source.image

target default = d873041736bd
  [a]
  54490d36b8f2  source image docker.io/library/alpine:latest@aaaaaaaaaaaa  (Dockerfile:1; also 3)
  f45d273a5cb6  exec   /bin/sh -c 'make a'  (cwd=/srv)  (Dockerfile:2)
      inputs: 54490d36b8f2
      mount / bind 54490d36b8f2 → output 0
      env PATH=/usr/local/bin:/usr/bin:/bin
      env LANG=C.UTF-8
  [b]
  ebc70b195f26  exec   /bin/sh -c 'make b'  (cwd=/srv)  (Dockerfile:4)
      inputs: 54490d36b8f2
      mount / bind 54490d36b8f2 → output 0
      env PATH=/usr/local/bin:/usr/bin:/bin
      env LANG=C.UTF-8
  [stage-2]
  e75d98d1e01c  file   copy f45d273a5cb6:/a → /a  (Dockerfile:6)
      inputs: ebc70b195f26, f45d273a5cb6
  3f75bbdf0434  file   copy 54490d36b8f2:/etc/os-release → /  (Dockerfile:7)
      inputs: e75d98d1e01c, 54490d36b8f2
  d873041736bd  image  linux/amd64, cmd ["sh"], 2 env  (Dockerfile:5)
      inputs: 3f75bbdf0434
"""


GO_BUILD = """\
FROM golang AS base
ENV GOFLAGS=-mod=vendor
RUN apk add --no-cache \\
      git \\
      make
FROM alpine AS tools
RUN <<EOF
  set -e
  echo "two  spaces" > /t
EOF
FROM base AS build
ARG VERSION=1.0
COPY --from=tools /t /t
RUN go build -o /out/app
FROM scratch AS final
COPY --link --from=build /out/app /app
COPY --from=golang /usr/local/go /go
"""


def test_scripts_environment_and_link_copies() -> None:
    """Before: the heredoc's lines at the left margin inside quotes, the `\\` chain as one line with
    runs of blanks, no environment, the `--link` copy indistinguishable from a plain one, and
    `[final]` twice (scratch first, then the rest of the stage at the end)."""
    assert listing(GO_BUILD) == """\
11 ops, 1 roots, features: exec, file.copy, image, merge, source.image, source.scratch

target default = 6a11903480fe
  [base]
  808782d39207  source image docker.io/library/golang:latest@aaaaaaaaaaaa  (Dockerfile:1)
  509a9a8e313a  exec   /bin/sh -c <script>  (cwd=/srv)  (Dockerfile:3-5)
      script:
        apk add --no-cache
          git
          make
      inputs: 808782d39207
      mount / bind 808782d39207 → output 0
      env PATH=/usr/local/bin:/usr/bin:/bin
      env LANG=C.UTF-8
      env GOFLAGS=-mod=vendor
  [tools]
  54490d36b8f2  source image docker.io/library/alpine:latest@aaaaaaaaaaaa  (Dockerfile:6)
  df225d177063  exec   /bin/sh -c <script>  (cwd=/srv)  (Dockerfile:7-10)
      script:
        set -e
        echo "two  spaces" > /t
      inputs: 54490d36b8f2
      mount / bind 54490d36b8f2 → output 0
      env PATH=/usr/local/bin:/usr/bin:/bin
      env LANG=C.UTF-8
  [build]
  df176e599e31  file   copy df225d177063:/t → /t  (Dockerfile:13)
      inputs: 509a9a8e313a, df225d177063
  3666f75db966  exec   /bin/sh -c 'go build -o /out/app'  (cwd=/srv)  (Dockerfile:14)
      inputs: df176e599e31
      mount / bind df176e599e31 → output 0
      env VERSION=1.0
  [final]
  e35e5df7e7ef  source scratch  (Dockerfile:15)
  f320883d5fe5  file   copy 3666f75db966:/out/app → /app  (base: empty)  (Dockerfile:16)
      inputs: 3666f75db966
  7f80f23d0b39  merge  e35e5df7e7ef + f320883d5fe5  (Dockerfile:16)
  663944c03625  file   copy 808782d39207:/usr/local/go → /go  (Dockerfile:17)
      inputs: 7f80f23d0b39, 808782d39207
  6a11903480fe  image  linux/amd64, 1 env  (Dockerfile:15)
      inputs: 663944c03625
"""


def test_an_unset_variable_and_a_stage_built_on_another_show_only_what_changed() -> None:
    base = b.image("alpine", digest=D1).with_meta("", "base", [ops.Location(0, 1)])
    first = base.run(["sh", "-c", "a"], env=["PATH=/bin", "KEEP=1", "GONE=x"])
    second = first.with_meta("", "next", [ops.Location(0, 3)]).run(["sh", "-c", "b"], env=["PATH=/bin", "KEEP=2"])
    text = text_listing(b.build_document({"default": second}))
    assert [line.strip() for line in text.splitlines() if line.strip().startswith(("env ", "unset "))] == [
        "env PATH=/bin", "env KEEP=1", "env GONE=x",  # nothing below runs a process: all of it
        "env KEEP=2", "unset GONE"]


def test_one_line_scripts_stay_inline_and_quoted_blanks_never_cut() -> None:
    def lines(script: str) -> list[str]:
        return render.script_lines(b.image("alpine").run(["/bin/sh", "-c", script]).vertex.op)

    assert lines("make && make install") == []
    assert lines('echo "a      b" \'c    d\'') == []
    assert lines("a &&  b;  c    d") == ["a &&", "  b;", "  c", "  d"]
    assert lines("\tx\n\t  y\n") == ["x", "  y"]
    assert render.script_lines(b.image("alpine").run(["echo", "a    b"]).vertex.op) == []


def multi_platform() -> ops.Document:
    base = b.image("docker.io/library/busybox:1.36", digest=D1).with_meta("[1/2] FROM busybox", "app", [ops.Location(0, 1)])
    ctx = b.local("context")
    roots = {}
    for arch in ("amd64", "arm64"):
        platform = ops.Platform(architecture=arch)
        step = base.run(["sh", "-c", "make"], env=[f"TARGETARCH={arch}"]).with_meta("[2/2] RUN make", "app", [ops.Location(0, 2)])
        roots[f"X@linux/{arch}"] = step.copy(ctx, "/", "/src/").with_image(ops.ImageConfig(), platform=platform)
    return b.build_document(roots, [ops.SourceFile("Dockerfile", "dockerfile", b"FROM busybox\nRUN make\n")])


def test_roots_named_by_target_and_platform_share_their_ops() -> None:
    """Whatever the roots are called (`--target X` → `X`, several platforms → `X@os/arch`), each gets
    its heading, in name order; an op both need is listed under the first only."""
    text = text_listing(multi_platform())
    titles = [line for line in text.splitlines() if line.startswith("target ")]
    assert [t.split(" = ")[0] for t in titles] == ["target X@linux/amd64", "target X@linux/arm64"]
    second = text.split("target X@linux/arm64")[1]
    assert "source image" not in second and "source local" not in second and "env TARGETARCH=arm64" in second
    assert text.count("  [app]\n") == 2 and text.count("source image docker.io/library/busybox:1.36") == 1


def test_no_trunc_prints_whole_digests(tmp_path: Path) -> None:
    doc = multi_platform()
    path = tmp_path / "g.irg"
    path.write_bytes(codec.dump_document(doc))
    short = runner.invoke(app, ["dump", str(path)])
    full = runner.invoke(app, ["dump", "--no-trunc", str(path)])
    assert short.exit_code == 0 and full.exit_code == 0, full.output
    for digest in doc.ops:
        assert f"  {digest}  " in full.stdout and digest not in short.stdout
    assert f"@{D1}" in full.stdout  # the base image's pin too
    assert not re.search(r"(?<![0-9a-f:])[0-9a-f]{12}(?![0-9a-f])", full.stdout)  # no short form left
    dot = runner.invoke(app, ["dump", "--no-trunc", "--format", "dot", str(path)])
    assert all(f'"{d}"' in dot.stdout for d in doc.ops)
    same = runner.invoke(app, ["dump", "--no-trunc", "--diff", str(path), str(path)])
    assert same.stdout == "no differences\n"


def test_a_diff_shows_the_script_lines_that_changed(tmp_path: Path) -> None:
    paths = []
    for n, last in enumerate(["make", "make test"]):
        script = f"set -e\n./configure\n{last}\n"
        step = b.image("alpine", digest=D1).with_meta("[2/2] RUN", "build", [ops.Location(0, 2)]).run(["/bin/sh", "-c", script])
        paths.append(tmp_path / f"{n}.irg")
        source = ops.SourceFile("Dockerfile", "dockerfile", f"FROM alpine\nRUN {script}".encode())
        paths[-1].write_bytes(codec.dump_document(b.build_document({"default": step}, [source])))
    result = runner.invoke(app, ["dump", "--diff", *map(str, paths)])
    assert result.exit_code == 1
    assert result.stdout.splitlines()[1:5] == [
        "      script:", "      - make", "      + make test", "      changed: exec.args[2]"]


def test_a_newline_in_a_variable_or_an_argument_cannot_forge_a_line() -> None:
    step = b.image("alpine").run(["echo", "x\n  0123456789ab  exec   fake"], env=["K=v\n      mount / bind evil"])
    text = text_listing(b.build_document({"default": step}))
    assert not any(line.lstrip().startswith(("0123456789ab", "mount / bind evil")) for line in text.splitlines())
    assert "env K=v\\x0a      mount / bind evil" in text


def test_every_exec_setting_away_from_its_default_is_shown() -> None:
    """Listed from `ExecOp`'s own fields, so one added later (the platform a step runs as, hosts,
    limits) shows without a change here; before, `hostname` was silently left out."""
    step = b.image("alpine").run(["make"], cwd="/src", user="1000", hostname="box", network="none")
    assert render.summary(step.vertex.op) == "make  (cwd=/src, user=1000, hostname=box, network=none)"
    assert render.summary(b.image("alpine").run(["make"]).vertex.op) == "make"
