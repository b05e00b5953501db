"""An in-memory `ImageResolver` for frontend tests (a test seam: the real resolver is the
backend's, wired by the CLI), shared by the Dockerfile, TOML, Python DSL and equivalence tests so
that all of them compile against the same images."""

from __future__ import annotations

from frontends import ResolvedImage
from ir import ops

DIGEST = "sha256:" + "a" * 64
LAYOUT_DIGEST = "sha256:" + "c" * 64
KNOWN = {"alpine", "busybox", "golang", "onbuild-base", "onbuild-from", "onbuild-chain", "127.0.0.1:5000/busybox:latest",
         "debian:12"}
BAD_TRIGGERS = {"onbuild-from": ["FROM alpine"], "onbuild-chain": ["ONBUILD RUN x"]}


class FakeResolver:
    """Knows a few images; each has PATH in Env, WorkingDir /srv, one layer, and — for
    ``onbuild-base`` — OnBuild triggers.  Records every lookup."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def resolve_image(self, ref: str, platform: ops.Platform) -> ResolvedImage:
        self.calls.append(("image", ref))
        if ref not in KNOWN and ref.removesuffix(":latest") not in KNOWN:
            raise LookupError(f"{ref}: not found")
        name = ref if "/" in ref.split(":")[0] or "." in ref.split("/")[0] else "docker.io/library/" + ref
        if ":" not in name.rsplit("/", 1)[-1]:
            name += ":latest"
        config = {
            "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"], "WorkingDir": "/srv",
                       "Cmd": ["sh"]},
            "history": [{"created_by": f"/bin/sh -c #(nop) ADD file:{ref} in / "}],
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "b" * 64]},
            "os": platform.os, "architecture": platform.architecture,
        }
        if ref == "onbuild-base":
            config["config"]["OnBuild"] = ["COPY . /app/src", "RUN make -C /app/src"]
        config["config"]["OnBuild"] = BAD_TRIGGERS.get(ref, config["config"].get("OnBuild"))
        return ResolvedImage(name, DIGEST, config, platform)

    def resolve_oci_layout(self, name: str, ref: str, platform: ops.Platform) -> ResolvedImage:
        self.calls.append(("oci", f"{name}:{ref}"))
        return ResolvedImage(ref, LAYOUT_DIGEST, {"config": {"Env": ["FROM_LAYOUT=1"]}}, platform)
