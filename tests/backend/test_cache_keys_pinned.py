"""The cache keys of representative ops, pinned to the values irctl has always given them.

A store filled by an earlier irctl must still hit: a refactor of how keys are computed (one handler
per op kind) may not move a single byte of any key.  The values below were taken before ops became
handlers; a change here means every user's cache misses once, and needs a key version bump instead.
Exec steps run on the in-process executor (``tests/support/fake_executor.py``).  Root only: the
file ops make files owned by 0:0, which is part of what they are.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backend.solve.solver import SolveOptions, solve
from ir import builder as b
from ir import ops
from tests.support.fake_executor import FakeExecutor

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="file ops chown what they make to 0:0: needs root")


class KeyRecorder:
    """A build record (``backend.solve.buildrecord``) that only keeps each step's key."""

    MAX_LISTING = 0

    def __init__(self) -> None:
        self.keys: dict[str, str] = {}
        self.no_cache = False

    def open(self, store_root: Path) -> None:
        pass

    def save(self) -> None:
        pass

    @staticmethod
    def new_listing() -> list:
        return []

    def has_listing(self, digest: str) -> bool:
        return True

    def save_listing(self, digest: str, entries: list) -> None:
        pass

    def note(self, digest, op, body, description, group, status, key, inputs, extra, identities) -> None:
        if key:
            self.keys[description] = key


def meta(text: str) -> ops.OpMetadata:
    return ops.OpMetadata(text)


def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "src").mkdir(parents=True)
    (ctx / "app.py").write_text("print(1)\n")
    (ctx / "src" / "lib.py").write_text("x = 1\n")
    for p, mode in ((ctx, 0o755), (ctx / "src", 0o755), (ctx / "app.py", 0o644), (ctx / "src" / "lib.py", 0o644)):
        os.chmod(p, mode)
    return ctx


def graphs() -> tuple[dict[str, b.State], dict[str, b.State]]:
    """Ops that run no process, and execs."""
    base = b.scratch().with_meta("mkfile /a").mkfile("/a", b"A")
    copied = base.copy(b.local("context"), "/app.py", "/app/", meta=meta("COPY app.py"), create_dest_path=True)
    other = b.scratch().with_meta("mkdir /d").mkdir("/d")
    merged = copied.merge([other], meta=meta("merge"))
    diffed = base.diff(copied, meta=meta("diff"))
    imaged = merged.with_image(ops.ImageConfig(env=("PATH=/bin",), cmd=("sh",)), meta=meta("image"))
    plain = {"default": imaged, "diff": diffed}
    locked = copied.with_meta("RUN cache").run(["/bin/sh", "-c", "true"],
                                              mounts=[b.cache("/x", sharing="locked")])
    named = copied.with_meta("RUN named cache").run(["/bin/sh", "-c", "true"],
                                                    mounts=[b.cache("/y", id="pip", sharing="private")])
    bound = base.with_meta("RUN bind").run(["/bin/sh", "-c", "true"],
                                           mounts=[b.bind("/src", b.local("context"), selector="/src")])
    return plain, {"cache": locked, "named": named, "bind": bound}


# Computed by the code before issue 13's refactoring. COPY and the bind selector are written in the
# IR's normal form (`/app.py`, `/src`), which the builder now produces whatever it is given.
PINNED = {
    "mkfile /a": "sha256:9840b0c2d537f4a1bad7bc4b2a4549f8c71909537405b282d2001bf1ff8f03fb",
    "mkdir /d": "sha256:9d9076c7f163b79e42d4a04af98df057888701f0075db27f43909584b7f3cdb2",
    "COPY app.py": "sha256:82d507b63043cc0b0a01b637d58d9ba9ba9757c348b5b7b93f0a5c8acf21600d",
    "merge": "sha256:b238125260d633e59755c49ce91b10017696d8f562216d7ea88352a0f6ef890c",
    "diff": "sha256:495edcac3b3ef2cc3ce316e6d3cb65521ef82d2a5e2c33bfe4c2d60586581afe",
    "image": "sha256:438b9f620d33f0b4ee27c466c7841981f5246e879797cc3097388f62c8a13b22",
    "RUN cache": "sha256:a294891cc2416483e656c4b79f7986dfd50734524f690c419f8c15fbd10586f9",
    "RUN named cache": "sha256:21434408f6b383c6fdeb66ee55bd11c7bcbd272a3fa254d2e549a12a6a2c3fec",
    "RUN bind": "sha256:7fb7c5eab2fbe49163bf1ec6e98ce9e651c459b00dedfe087a41ed49133e9397",
}
# `--network none` changes what a `network: default` step sees, so it is part of such a step's key
PINNED_NETWORK_NONE = {**PINNED,
    "RUN cache": "sha256:7d162e8e41caf18909b23c374ebef8493b8a79f1f2464ccd5d38f93bf99a415e",
    "RUN named cache": "sha256:0e129a71b1a1e1b8202cde0cf6b099f83501b8109db2824149dbd7dfa4502c83",
    "RUN bind": "sha256:7ae2db15e21dc298acefb2b7dd7cb01036839a58c774c201f7c15cbc464a7c94",
}


def keys_of(tmp_path: Path, **options) -> dict[str, str]:
    ctx = context(tmp_path)
    plain, execs = graphs()
    rec = KeyRecorder()
    o = SolveOptions(cache_dir=tmp_path / "cache", local_dirs={"context": ctx}, record=rec, executor=FakeExecutor({"/bin/sh": lambda ctx, args: 0}),
                     **options)
    targets = {**plain, **execs}
    solve(b.build_document(targets), list(targets), o)
    return rec.keys


def test_keys_are_the_ones_irctl_always_gave(tmp_path: Path) -> None:
    assert keys_of(tmp_path) == PINNED


def test_network_none_keys_are_the_ones_irctl_always_gave(tmp_path: Path) -> None:
    assert keys_of(tmp_path, network="none") == PINNED_NETWORK_NONE
