"""ir.merge: one document from one per (target, platform); ir.roots: how its roots are named."""

from __future__ import annotations

import pytest

from ir import builder, ops
from ir.merge import label_platform, merge
from ir.roots import default_roots, root_name
from ir.validate import check_graph

ARM = ops.Platform("linux", "arm64")
TOOLS_META = ops.OpMetadata("[tools 2/2] RUN make tools", locations=(ops.Location(0, 2),))


def _part(platform: ops.Platform, source: bytes, arch_meta_file: int = 0) -> ops.Document:
    """A Dockerfile-like graph: a tools stage on the build platform (shared), a stage for ``platform``."""
    tools = builder.image("busybox", meta=ops.OpMetadata("FROM busybox")).run(["make", "tools"], meta=TOOLS_META)
    base = builder.image("busybox", platform=platform)
    final = base.run(["uname", "-m"], platform=platform,
                     meta=ops.OpMetadata("[stage-1 2/2] RUN uname -m", locations=(ops.Location(arch_meta_file, 5),)))
    final = final.file([ops.FileAction(copy=ops.CopyAction(src=0, src_path="/t", dest="/t"))], [tools])
    files = (ops.SourceFile("Dockerfile", "dockerfile", source),)
    if arch_meta_file:
        files = (ops.SourceFile("other", "dockerfile", b"x"),) + files
    return builder.build_document({"default": final}, sources=files)


def test_shared_ops_appear_once_and_each_part_keeps_its_root():
    amd, arm = _part(ops.Platform(), b"FROM ..."), _part(ARM, b"FROM ...")
    doc = merge([("default@linux/amd64", amd), ("default@linux/arm64", arm)])
    assert not check_graph(doc)
    shared = set(amd.ops) & set(arm.ops)
    assert len(shared) == 2  # the tools stage's image and RUN
    assert len(doc.ops) == len(amd.ops) + len(arm.ops) - len(shared)
    assert doc.roots == {"default@linux/amd64": amd.roots["default"], "default@linux/arm64": arm.roots["default"]}
    assert "exec.platform" in doc.features and "exec.platform" not in amd.features


def test_sources_deduplicated_and_locations_reindexed():
    amd = _part(ops.Platform(), b"FROM a")
    arm = _part(ARM, b"FROM a", arch_meta_file=1)  # the same Dockerfile, behind another file
    other = _part(ops.Platform("linux", "ppc64le"), b"FROM b")  # the same name, other bytes: kept apart
    doc = merge([("a", amd), ("b", arm), ("c", other)])
    assert [(f.name, f.data) for f in doc.sources] == [("Dockerfile", b"FROM a"), ("other", b"x"),
                                                      ("Dockerfile", b"FROM b")]
    for part, want in ((arm, 0), (other, 2)):
        run = next(d for d, m in part.metadata.items() if m.description.startswith("[stage-1"))
        (loc,) = doc.metadata[run].locations
        assert doc.sources[loc.file].data == part.sources[part.metadata[run].locations[0].file].data
        assert loc.file == want


def test_the_first_metadata_is_kept():
    amd = label_platform(_part(ops.Platform(), b"F"), ops.Platform())
    arm = label_platform(_part(ARM, b"F"), ARM)
    doc = merge([("x", amd), ("y", arm)])
    tools = next(d for d, m in amd.metadata.items() if "tools" in m.description)
    assert doc.metadata[tools].description == "[linux/amd64 tools 2/2] RUN make tools"
    runs = sorted(m.description for m in doc.metadata.values() if "uname" in m.description)
    assert runs == ["[linux/amd64 stage-1 2/2] RUN uname -m", "[linux/arm64 stage-1 2/2] RUN uname -m"]


def test_merge_refuses_parts_it_cannot_name():
    doc = _part(ops.Platform(), b"F")
    with pytest.raises(ValueError, match="two parts named 'x'"):
        merge([("x", doc), ("x", doc)])
    two = ops.replace(doc, roots={"a": doc.roots["default"], "b": doc.roots["default"]})
    with pytest.raises(ValueError, match="exactly one root"):
        merge([("x", two)])


def test_root_names():
    assert root_name("") == "default" and root_name("build") == "build"
    assert root_name("", ARM) == "default@linux/arm64"
    assert root_name("x", ops.Platform("linux", "arm", "v7")) == "x@linux/arm/v7"


@pytest.mark.parametrize("roots, want", [
    (["default", "other"], ["default"]),
    (["default@linux/arm64", "default@linux/amd64"], ["default@linux/amd64", "default@linux/arm64"]),
    (["build"], ["build"]),
])
def test_default_roots(roots, want):
    doc = _part(ops.Platform(), b"F")
    ref = doc.roots["default"]
    assert default_roots(ops.replace(doc, roots={r: ref for r in roots})) == want


def test_no_default_root_among_several_targets():
    doc = _part(ops.Platform(), b"F")
    ref = doc.roots["default"]
    with pytest.raises(ValueError, match="several targets \\(a, b\\)"):
        default_roots(ops.replace(doc, roots={"a@linux/amd64": ref, "b@linux/amd64": ref}))
