"""``type=tar``: the flattened root filesystem as one tar, written straight from the layers.

The layers are merged in memory (names, and which layer each surviving entry comes from), then the
tar is written in one pass, each file read once from the layer that has it. Flattening into a
temporary directory first, as ``type=local`` must, wrote every byte of the image twice, read it
twice and deleted it again: 2.9 s of a 4.1 s export of debian here, against 0.9 s for the tar alone.

The merge is the one ``backend.export.local.apply_layer`` performs on a directory (and overlayfs on
a mount): bottom layer first, a whiteout deletes what is below, an opaque directory hides it, a
directory over a directory keeps the contents below and takes the upper one's metadata, anything
else replaces the path with its subtree. Entries are written exactly as ``backend.oci.layertar`` writes a
layer (same order, headers, hard links within a layer, device placeholders as device entries), so
the bytes equal those of tarring the flattened directory (``tests/backend/test_rootfs_tar.py``).
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO, Sequence

from backend.fs import devnodes, safefs
from backend.oci.compression import LayerSink
from backend.oci.layertar import layer_xattrs, tar_entry, write_file_entry
from backend.fs.layerformat import is_opaque


class _Node:
    """One path of the merged tree: where it comes from (layer index, path in that layer, lstat)."""

    __slots__ = ("layer", "src", "st", "children")

    def __init__(self, layer: int, src: bytes, st: os.stat_result) -> None:
        self.layer, self.src, self.st = layer, src, st
        self.children: dict[bytes, _Node] | None = {} if stat.S_ISDIR(st.st_mode) else None


def merge(layers: Sequence[bytes]) -> dict[bytes, _Node]:
    """The merged tree's top-level entries (``layers`` bottom first, overlay upper-dir format)."""
    top: dict[bytes, _Node] = {}
    for index, root in enumerate(layers):
        dirs: dict[bytes, dict[bytes, _Node]] = {b"": top}  # this layer's dirs -> the merged children
        for e in safefs.walk(root, where="in a layer"):
            parent = dirs.get(e.rel[: len(e.rel) - len(e.name) - 1] if b"/" in e.rel else b"")
            if parent is None:  # below a directory this layer replaced by a non-directory: impossible
                continue  # in a well-formed layer; ignored, as the walk of an applied layer would
            st, name, src = e.st, e.name, root + b"/" + e.rel
            m = st.st_mode
            if stat.S_ISCHR(m) and st.st_rdev == 0:  # a whiteout
                parent.pop(name, None)
                continue
            if stat.S_ISDIR(m):
                old = parent.get(name)
                if old is not None and old.children is not None and not is_opaque(src):
                    old.layer, old.src, old.st = index, src, st  # merged: the upper's metadata
                else:
                    old = parent[name] = _Node(index, src, st)
                dirs[e.rel] = old.children  # type: ignore[assignment]
                continue
            parent[name] = _Node(index, src, st)
    return top


def write_rootfs_tar(layers: Sequence[str | os.PathLike[str]], out: BinaryIO, *,
                     source_date_epoch: int | None = None) -> str:
    """Write the flattened root filesystem of ``layers`` (bottom first) as an uncompressed tar to
    ``out``; returns its sha256 digest."""
    return write_rootfs_tars([("", layers)], out, source_date_epoch=source_date_epoch)


def write_rootfs_tars(trees: Sequence[tuple[str, Sequence[str | os.PathLike[str]]]], out: BinaryIO, *,
                      source_date_epoch: int | None = None) -> str:
    """Several flattened root filesystems in one tar, each under its own directory (``prefix``,
    a plain name: a multi-platform ``type=tar``'s ``linux_amd64/``…; ``""``: at the top). Returns
    the tar's sha256 digest."""
    sink = LayerSink(out, "none", None, 0)
    for prefix, layers in trees:
        links: dict[tuple[int, int, int], bytes] = {}  # a tree's hard links stay inside it
        top = merge([os.fsencode(os.fspath(p)) for p in layers])
        base = os.fsencode(prefix)
        if base:  # a directory of ours: root's, 0755, dated like the rest (0 or SOURCE_DATE_EPOCH)
            sink.write(tar_entry(base + b"/", None, b"5", mode=0o755, sde=source_date_epoch))
        stack: list[tuple[bytes, list[tuple[bytes, _Node]]]] = [(base + b"/" if base else b"",
                                                                 sorted(top.items(), reverse=True))]
        while stack:
            parent, todo = stack[-1]
            if not todo:
                stack.pop()
                continue
            child, node = todo.pop()
            name = parent + child
            _write_entry(sink, name, node, links, source_date_epoch)
            if node.children is not None:
                if len(stack) >= safefs.MAX_DEPTH:
                    raise safefs.too_deep(name, "in the image")
                stack.append((name + b"/", sorted(node.children.items(), reverse=True)))
    sink.write(b"\0" * 1024)
    sink.close()
    return "sha256:" + sink.diff.hexdigest()


def _write_entry(sink: LayerSink, name: bytes, node: _Node, links: dict, sde: int | None) -> None:
    """One entry, as ``backend.oci.layertar._walk_tar`` writes it for the flattened copy of ``node``."""
    st, path = node.st, node.src
    m = st.st_mode
    if stat.S_ISDIR(m):
        sink.write(tar_entry(name + b"/", st, b"5", xattrs=layer_xattrs(path), sde=sde))
    elif stat.S_ISREG(m):
        dev = devnodes.placeholder_of(path, st) if st.st_size == 0 else None
        if dev is not None:
            sink.write(tar_entry(name, st, b"3" if dev[0] == stat.S_IFCHR else b"4", xattrs=layer_xattrs(path),
                              sde=sde, rdev=dev[1]))
            return
        key = (node.layer, st.st_dev, st.st_ino)
        if st.st_nlink > 1:  # a hard link within one layer stays one (a flattened copy links them too)
            if key in links:
                sink.write(tar_entry(name, st, b"1", linkname=links[key], sde=sde))
                return
            links[key] = name
        write_file_entry(sink, path, name, st, sde, fd=os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC))
    elif stat.S_ISLNK(m):
        sink.write(tar_entry(name, st, b"2", linkname=os.readlink(path), xattrs=layer_xattrs(path), sde=sde))
    elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
        sink.write(tar_entry(name, st, b"3" if stat.S_ISCHR(m) else b"4", xattrs=layer_xattrs(path), sde=sde))
    elif stat.S_ISFIFO(m):
        sink.write(tar_entry(name, st, b"6", xattrs=layer_xattrs(path), sde=sde))
    # a socket has no tar entry (it still replaced what was below it, as in a flattened copy)
