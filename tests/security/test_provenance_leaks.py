"""What a provenance publishes (``backend.export.provenance``): whoever can pull the image reads it,
so neither a credential typed into a source's URL nor a host path of the build file may be in it."""

from __future__ import annotations

import json

import pytest

from backend.export.provenance import Invocation, predicate
from ir import builder as b
from ir import ops

SUM = "sha256:" + "b" * 64
COMMIT = "c" * 40
TOKEN = "ghp_t0kenThatMustNotBePublished"


def leaky_document(build_file: str = "Dockerfile") -> ops.Document:
    step = b.scratch().copy(b.http(f"https://bob:{TOKEN}@example.com/tool.tgz", checksum=SUM), "/tool.tgz", "/")
    step = step.copy(b.git(f"https://{TOKEN}@github.com/org/private.git", ref=COMMIT), "/", "/repo/")
    step = step.copy(b.git(f"ssh://git:{TOKEN}@example.com/repo.git", ref=COMMIT), "/", "/ssh/")
    return b.build_document({"default": step}, sources=(ops.SourceFile(build_file, "dockerfile", b"FROM x\n"),))


@pytest.mark.parametrize("mode", ["min", "max"])
def test_a_credential_in_a_source_url_is_not_published(mode: str) -> None:
    p = predicate(leaky_document(), "default", "linux/amd64", Invocation(frontend="dockerfile"), mode)
    assert TOKEN not in json.dumps(p)
    assert [m["uri"] for m in p["materials"]] == [  # what was fetched stays named, without who fetched it
        "https://example.com/tool.tgz", f"https://github.com/org/private.git#{COMMIT}",
        f"ssh://git@example.com/repo.git#{COMMIT}"]


def test_a_build_file_outside_the_context_is_named_without_its_host_path() -> None:
    p = predicate(leaky_document("/home/alice/private/ci/app.Dockerfile"), "default", "linux/amd64",
                  Invocation(frontend="dockerfile"))
    assert "alice" not in json.dumps(p)
    assert p["invocation"]["configSource"]["entryPoint"] == "app.Dockerfile"  # BuildKit: the file's name
