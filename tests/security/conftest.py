"""Helpers for the security suite: scanning everything irctl wrote for a value, crafting hostile
archives and images, and running the real CLI (``tests.support.cli.irctl``) on them."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import zstandard

from tests.cli.conftest import busybox_ref, cache_env  # noqa: F401  (fixtures re-exported)
from tests.support.baseimage import PATH_ENV, _layer_tar


# --------------------------------------------------------------------------------------- scanning

@dataclass
class Scan:
    """What a scan looked at and where the needles turned up."""

    files: int = 0
    bytes: int = 0  # bytes read, decompressed and unpacked members included
    hits: list[str] = field(default_factory=list)

    def add(self, other: "Scan") -> None:
        self.files += other.files
        self.bytes += other.bytes
        self.hits += other.hits


def needles(value: bytes) -> list[bytes]:
    """The value, its stripped form, and its base64 forms at every alignment."""
    core = value.strip()
    out = {value, core}
    for i in range(3):
        enc = base64.b64encode(core[i:])
        out.add(enc[: len(enc) - 4] if len(enc) > 8 else enc)
    return [n for n in out if len(n) >= 8]


def scan_bytes(data: bytes, where: str, values: list[bytes], scan: Scan, depth: int = 0) -> None:
    scan.bytes += len(data)
    for v in values:
        if v in data:
            scan.hits.append(f"{where}: {v[:12]!r}…")
    if depth > 3:
        return
    inner = None
    try:
        if data[:2] == b"\x1f\x8b":
            inner = gzip.decompress(data)
        elif data[:4] == b"\x28\xb5\x2f\xfd":
            inner = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True).read()
    except Exception:  # noqa: BLE001 - not what its magic said: the raw bytes were scanned already
        inner = None
    if inner is not None:
        scan_bytes(inner, where + "!decompressed", values, scan, depth + 1)
        return
    if len(data) >= 1024 and data[257:262] == b"ustar":
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
                for m in tf:
                    names = (m.name + "\0" + m.linkname + "\0" + json.dumps(m.pax_headers)).encode()
                    scan_bytes(names, f"{where}!{m.name}(header)", values, scan, depth + 1)
                    if m.isreg():
                        f = tf.extractfile(m)
                        if f is not None:
                            scan_bytes(f.read(), f"{where}!{m.name}", values, scan, depth + 1)
        except tarfile.TarError:
            pass


def scan_tree(root: Path, values: list[bytes]) -> Scan:
    """Every regular file below ``root`` (and every symlink target and file name) for ``values``."""
    scan = Scan()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            scan_bytes(os.fsencode(p), f"name {p}", values, scan, depth=99)
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(st.st_mode):
                scan_bytes(os.fsencode(os.readlink(p)), f"link {p}", values, scan, depth=99)
            elif stat.S_ISREG(st.st_mode):
                scan.files += 1
                try:
                    with open(p, "rb") as f:
                        data = f.read()
                except OSError:
                    continue
                scan_bytes(data, p, values, scan)
            for xname in _xattrs(p):
                try:
                    scan_bytes(os.getxattr(p, xname, follow_symlinks=False), f"xattr {p}", values, scan, 99)
                except OSError:
                    pass
    return scan


def _xattrs(p: str) -> list[str]:
    try:
        return os.listxattr(p, follow_symlinks=False)
    except OSError:
        return []


# --------------------------------------------------------------------------------------- images

def tar_bytes(entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            info, data = (e, None) if isinstance(e, tarfile.TarInfo) else e
            if data is not None:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return buf.getvalue()


def entry(name: str, kind: str = "file", *, data: bytes = b"", link: str = "", mode: int = 0o644,
          devmajor: int = 0, devminor: int = 0):
    info = tarfile.TarInfo(name)
    info.mode, info.mtime, info.uid, info.gid = mode, 0, 0, 0
    if kind == "file":
        return (info, data)
    info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                 "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}[kind]
    info.linkname, info.devmajor, info.devminor = link, devmajor, devminor
    if kind == "dir":
        info.mode = 0o755
    return info


def _blob(layout: Path, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def make_layout(dest: Path, extra_layers: list[bytes], *, with_busybox: bool = True, tag: str = "latest",
                corrupt_diff_ids: bool = False) -> Path:
    """An OCI layout: busybox's layer (optional) plus ``extra_layers`` (plain tars, gzipped here)."""
    (dest / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    tars = ([_layer_tar(Path("/bin/busybox"))] if with_busybox else []) + list(extra_layers)
    layers, diff_ids = [], []
    for t in tars:
        gz = io.BytesIO()
        with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, filename="") as z:
            z.write(t)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **_blob(dest, gz.getvalue())})
        diff_ids.append("sha256:" + hashlib.sha256(t).hexdigest())
    config = {"architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine),
              "os": "linux", "config": {"Env": [PATH_ENV], "Cmd": ["sh"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    cdesc = _blob(dest, json.dumps(config, sort_keys=True).encode())
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **cdesc}, "layers": layers}
    mdesc = _blob(dest, json.dumps(manifest, sort_keys=True).encode())
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", **mdesc,
                            "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    (dest / "index.json").write_text(json.dumps(index))
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return dest


def push_layout(layout: Path, ref: str, tag: str = "latest") -> None:
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests",
                    f"oci:{layout}:{tag}", f"docker://{ref}"], check=True, capture_output=True)


def write_ctx(ctx: Path, files: dict[str, str | bytes]) -> Path:
    for name, text in files.items():
        p = ctx / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text.encode() if isinstance(text, str) else text)
    return ctx


def mounts_under(path: Path | str) -> list[str]:
    prefix = os.fspath(path)
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(prefix)]


@pytest.fixture
def layout_ctx(busybox_layout: Path) -> list[str]:
    """``--build-context busybox=oci-layout://…``: busybox without a registry."""
    return ["--build-context", f"busybox=oci-layout://{busybox_layout}:latest"]
