"""Helpers for solver end-to-end tests: solve a builder graph against a busybox OCI-layout grant."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.events import Recorder
from backend.solve.solver import SolveOptions, solve
from ir import builder as b

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Solving:
    """Solve graphs on one cache store; every solve records its events."""

    def __init__(self, cache: Path, layout: Path, context: Path):
        self.cache = cache
        self.layout = layout
        self.context = context
        self.last: Recorder | None = None

    def base(self) -> b.State:
        return b.oci_layout("busybox", ref="latest").with_env("PATH", PATH)

    def options(self, **kw) -> SolveOptions:
        kw.setdefault("local_dirs", {"context": self.context})
        kw.setdefault("oci_layouts", {"busybox": self.layout})
        return SolveOptions(cache_dir=self.cache, **kw)

    def solve(self, targets: dict[str, b.State] | b.State, **kw):
        if not isinstance(targets, dict):
            targets = {"default": targets}
        self.last = Recorder()
        kw.setdefault("on_event", self.last)
        doc = b.build_document(targets, kw.pop("sources", ()))
        return solve(doc, list(targets), self.options(**kw))

    def ran(self) -> list[str]:
        """Descriptions of the ops the last solve executed (not cache hits; not an image source that
        was only resolved, whose layers are pulled under it when a step needs them)."""
        assert self.last is not None
        return [e.description for e in self.last.of("finished") if e.text != "resolved"]

    def logs(self) -> str:
        assert self.last is not None
        return "\n".join(e.text for e in self.last.of("log"))


@pytest.fixture
def solving(tmp_path: Path, busybox_layout: Path) -> Solving:
    ctx = tmp_path / "context"
    ctx.mkdir()
    return Solving(tmp_path / "cache", busybox_layout, ctx)


def read_file(snapshot, path: str) -> bytes | None:
    """A file as the snapshot's top-most layer that has it (no whiteout handling; tests only)."""
    for layer in reversed(snapshot.layers):
        p = Path(layer) / path.lstrip("/")
        if p.is_file():
            return p.read_bytes()
    return None
