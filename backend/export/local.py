"""``type=local`` and ``type=tar``: the final root filesystem, flattened from the layers.

Layers are applied bottom first onto ``dest`` as overlayfs would show them: a whiteout (char 0:0)
deletes the path below, an opaque directory hides everything below it, the rest replaces what was
there. Hard links inside one layer stay hard links. ``export_tar`` writes the same tree as a tar
without flattening it on disk (``backend.export.rootfs``).

``type=local`` writes into a directory other local users may reach, so it creates no device node and
clears setuid/setgid bits, with a warning line saying how many (see ``apply_layer``).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path
import sys
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Sequence

from backend.fs import devnodes, safefs
from backend.export.image import ImageSpec, LayerLike, layer_source
from backend.export.reuse import ExportMemo, replacing, what_digest
from backend.export.rootfs import write_rootfs_tar, write_rootfs_tars
from backend.fs.layerformat import is_opaque, read_xattrs
from backend.oci.layertar import SKIP_XATTR_PREFIXES
from backend.snapshot.layertree import remove_path


_FILE_CAPS = "security.capability"  # file capabilities: privilege like setuid, for whoever runs the file


def _copy_meta(src: bytes, dst: bytes, st: os.stat_result, is_root: bool, private: bool = False) -> bool:
    """Owner, mode, xattrs and times of ``src`` onto ``dst``; ``private`` leaves file capabilities out
    (returns True when ``src`` had some)."""
    link = stat.S_ISLNK(st.st_mode)
    had_caps = False
    if is_root:  # first: chown clears setuid bits and security.capability
        os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    for name, value in read_xattrs(src, SKIP_XATTR_PREFIXES).items():
        if private and name == _FILE_CAPS:
            had_caps = True
            continue
        try:
            os.setxattr(dst, name, value, follow_symlinks=False)
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
    if not link:
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    return had_caps


@dataclass
class LocalReport:
    """What a ``private`` flatten left out or changed, for one warning line each."""

    devices: list[str] = field(default_factory=list)  # device nodes (and their placeholders) not created
    setid: list[str] = field(default_factory=list)  # files whose setuid/setgid bits were cleared
    caps: list[str] = field(default_factory=list)  # files whose capabilities (security.capability) were left out


def apply_layer(layer: bytes, dest: bytes, is_root: bool, private: bool = False,
                report: LocalReport | None = None) -> None:
    """Apply one layer onto ``dest``. The layer is walked with ``safefs.walk`` (no recursion, no link
    followed); a directory of ``dest`` is entered only once it is a real directory (a symlink an
    earlier layer left there is replaced, never written through).

    ``private`` (a ``type=local`` export, a directory other users may reach): no device node is
    created — a node on the host is a door to the hardware — and setuid/setgid bits and file
    capabilities are cleared, so the export never hands another user a program that runs with more
    privilege than they have."""
    links: dict[tuple[int, int], bytes] = {}
    dir_meta: list[tuple[bytes, bytes, os.stat_result]] = []
    report = report if report is not None else LocalReport()
    for e in safefs.walk(layer, where="in a layer"):
        s, d = layer + b"/" + e.rel, dest + b"/" + e.rel
        st = e.st
        m = st.st_mode
        if stat.S_ISCHR(m) and st.st_rdev == 0:
            remove_path(d)
            continue
        if stat.S_ISDIR(m):
            if is_opaque(s) or not (os.path.isdir(d) and not os.path.islink(d)):
                remove_path(d)
                os.mkdir(d, 0o700)
            dir_meta.append((s, d, st))
            continue
        remove_path(d)
        node = devnodes.placeholder_of(s, st) if stat.S_ISREG(m) and st.st_size == 0 else None
        if node is not None or devnodes.is_device(m, st.st_rdev):
            if private:
                report.devices.append(os.fsdecode(e.rel))
                continue
            kind, rdev = node if node is not None else (stat.S_IFMT(m), st.st_rdev)
            devnodes.make_placeholder_at(d, kind | stat.S_IMODE(m), rdev)  # the tar writer emits the node
            _copy_meta(s, d, st, is_root)
            continue
        key = (st.st_dev, st.st_ino)
        if stat.S_ISREG(m) and st.st_nlink > 1 and key in links:
            os.link(links[key], d)
            continue
        if stat.S_ISREG(m):
            shutil.copyfile(s, d, follow_symlinks=False)
            links[key] = d
        elif stat.S_ISLNK(m):
            os.symlink(os.readlink(s), d)
        elif stat.S_ISFIFO(m):
            os.mkfifo(d, 0o600)
        else:
            continue
        if _copy_meta(s, d, st, is_root, private):
            report.caps.append(os.fsdecode(e.rel))
        if private and not stat.S_ISLNK(m) and m & (stat.S_ISUID | stat.S_ISGID):
            os.chmod(d, stat.S_IMODE(m) & ~(stat.S_ISUID | stat.S_ISGID))
            report.setid.append(os.fsdecode(e.rel))
    for s, d, st in reversed(dir_meta):  # children first, so mtimes stick
        _copy_meta(s, d, st, is_root)
        if private and st.st_mode & stat.S_ISUID:  # setgid on a dir only sets the group of new files
            os.chmod(d, stat.S_IMODE(st.st_mode) & ~stat.S_ISUID)


def flatten_layers(layers: Sequence[LayerLike], dest: str | os.PathLike[str], private: bool = False,
                   report: LocalReport | None = None) -> Path:
    """Apply ``layers`` (bottom first) onto ``dest`` (created if needed)."""
    out = os.fsencode(os.fspath(dest))
    os.makedirs(out, exist_ok=True)
    is_root = os.geteuid() == 0
    for layer in layers:
        apply_layer(os.fsencode(os.fspath(layer_source(layer).path)), out, is_root, private, report)
    return Path(os.fsdecode(out))


def export_local(spec: ImageSpec, dest: str | os.PathLike[str], *,
                 warn: Callable[[str], None] | None = None) -> Path:
    """Write the image's flattened rootfs into directory ``dest``: no device nodes, no setuid/setgid
    bits (one warning line each, with how many and the first few paths)."""
    report = LocalReport()
    out = flatten_layers(spec.layers, dest, private=True, report=report)
    say = warn or (lambda text: sys.stderr.write(f"warning: {text}\n"))
    if report.devices:
        say(f"type=local: {len(report.devices)} device node(s) not created ({_few(report.devices)}); "
            "a type=tar or image export keeps them")
    if report.setid:
        say(f"type=local: setuid/setgid bits cleared on {len(report.setid)} file(s) ({_few(report.setid)}); "
            "a type=tar or image export keeps them")
    if report.caps:
        say(f"type=local: file capabilities left out on {len(report.caps)} file(s) ({_few(report.caps)}); "
            "a type=tar or image export keeps them")
    return out


def _few(paths: list[str]) -> str:
    shown = ", ".join("/" + p for p in paths[:3])
    return shown + (", …" if len(paths) > 3 else "")


def platform_dir(platform: str) -> str:
    """The sub-directory buildx gives a platform in a multi-platform ``type=local``/``type=tar``:
    ``linux/arm/v7`` → ``linux_arm_v7``."""
    return platform.replace("/", "_")


def export_local_platforms(specs: Sequence[tuple[str, ImageSpec]], dest: str | os.PathLike[str], *,
                           split: bool = True, warn: Callable[[str], None] | None = None) -> Path:
    """Several platforms' root filesystems: each in ``dest/<platform_dir>`` (buildx's default), or,
    with ``split=False`` (``platform-split=false``), all applied onto ``dest`` in order."""
    for platform, spec in specs:
        export_local(spec, Path(dest) / platform_dir(platform) if split else dest, warn=warn)
    return Path(dest)


def export_tar(spec: ImageSpec, out: BinaryIO, *, tmp_dir: str | os.PathLike[str] | None = None,
               source_date_epoch: int | None = None) -> str:
    """Write the flattened rootfs as one uncompressed tar to ``out``; returns its sha256 digest.
    (Straight from the layers, ``backend.export.rootfs``; ``tmp_dir`` is no longer needed.)"""
    return write_rootfs_tar([layer_source(x).path for x in spec.layers], out, source_date_epoch=source_date_epoch)


def export_tar_file(spec: ImageSpec | Sequence[tuple[str, ImageSpec]], dest: str | os.PathLike[str], *,
                    memo_root: str | os.PathLike[str], source_date_epoch: int | None = None) -> str:
    """``export_tar`` into file ``dest`` (replaced atomically); returns the tar's digest. Several
    ``(platform, spec)`` go into the one tar, each under its ``platform_dir`` (as BuildKit's tar
    exporter does). The layers must be the store's (immutable, named by content): a tar of the same
    layers already at ``dest``, untouched since, is not written again (``backend.export.reuse``)."""
    trees = [("", spec)] if isinstance(spec, ImageSpec) else [(platform_dir(p), s) for p, s in spec]
    memo = ExportMemo(memo_root)
    parts: list[bytes] = []
    for prefix, one in trees:
        if prefix:
            parts.append(b"\0dir\0" + os.fsencode(prefix))
        parts += [os.fsencode(os.path.abspath(layer_source(x).path)) for x in one.layers]
    what = what_digest("rootfs-tar", *parts, b"%d" % source_date_epoch if source_date_epoch is not None else b"-")
    rec = memo.unchanged(dest, what)
    if rec is not None and isinstance(rec.get("result"), str) and rec["result"].startswith("sha256:"):
        return rec["result"]
    with replacing(dest) as f:
        digest = write_rootfs_tars([(prefix, [layer_source(x).path for x in one.layers]) for prefix, one in trees], f,
                                   source_date_epoch=source_date_epoch)
        mine = os.fstat(f.fileno())
    memo.remember(dest, what, result=digest, written={"": mine})
    return digest
