"""The SLSA provenance predicate from an IR document (``backend.export.provenance``): materials from
every kind of source, BuildKit's min/max split, a platform's own root, secret and SSH ids only."""

from __future__ import annotations

import hashlib

import pytest

from backend.export.provenance import Invocation, predicate
from ir import builder as b
from ir import ops

BASE = "sha256:" + "a" * 64
SUM = "sha256:" + "b" * 64
COMMIT = "c" * 40


def document() -> ops.Document:
    base = b.image("docker.io/library/debian:bookworm", BASE, ops.Platform("linux", "arm64", "v8"))
    step = base.run(["sh", "-c", "make"], mounts=[b.bind("/src", b.local("context")), b.secret("npmrc", required=True),
                                                  b.ssh(id="github")])
    step = step.copy(b.http("https://example.com/tool.tgz", checksum=SUM), "/tool.tgz", "/opt/")
    step = step.copy(b.git("https://example.com/repo.git", ref=COMMIT), "/", "/repo/")
    other = b.image("docker.io/library/alpine:3", BASE).run(["true"])
    return b.build_document({"default@linux/arm64": step, "default@linux/amd64": other},
                            sources=(ops.SourceFile("Dockerfile", "dockerfile", b"FROM debian\n"),))


INVOKED = Invocation(frontend="dockerfile", target="app", build_args=(("V", "1"),))


def test_min_names_the_materials_and_no_argument_values() -> None:
    p = predicate(document(), "default@linux/arm64", "linux/arm64", INVOKED)
    assert p["materials"] == [
        {"uri": "pkg:docker/debian@bookworm?platform=linux%2Farm64%2Fv8", "digest": {"sha256": "a" * 64}},
        {"uri": "https://example.com/tool.tgz", "digest": {"sha256": "b" * 64}},
        {"uri": f"https://example.com/repo.git#{COMMIT}", "digest": {"sha1": COMMIT}},
    ]
    assert p["invocation"]["parameters"] == {"frontend": "dockerfile", "args": {"target": "app"},
                                             "locals": [{"name": "context"}]}
    assert p["invocation"]["configSource"] == {"entryPoint": "Dockerfile",
                                               "digest": {"sha256": hashlib.sha256(b"FROM debian\n").hexdigest()}}
    assert "buildConfig" not in p and p["metadata"]["completeness"]["parameters"] is False


def test_max_adds_arguments_secret_and_ssh_ids_and_the_steps_in_build_order() -> None:
    doc = document()
    p = predicate(doc, "default@linux/arm64", "linux/arm64", INVOKED, "max")
    params = p["invocation"]["parameters"]
    assert params["args"] == {"target": "app", "build-arg:V": "1"}
    assert params["secrets"] == [{"id": "npmrc", "optional": False}]
    assert params["ssh"] == [{"id": "github", "optional": True}]
    steps = p["buildConfig"]["steps"]
    position = {s["id"]: i for i, s in enumerate(steps)}
    for s in steps:  # every input comes before the step reading it
        assert all(position[i.split(":")[0]] < position[s["id"]] for i in s["inputs"])
    assert steps[-1]["digest"] == doc.roots["default@linux/arm64"].op
    assert not any("alpine" in str(s["op"]) for s in steps)  # the other platform's graph is not this image's


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="min or max"):
        predicate(document(), "default@linux/arm64", "linux/arm64", INVOKED, "full")
