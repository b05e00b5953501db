"""A busybox base image built offline from Debian's busybox-static, for tests and examples.

`make_busybox_rootfs(dest)` lays out a root filesystem directory; `make_busybox_layout(dest_dir)` writes a
single-layer OCI image layout (ref `latest`) with deterministic bytes, using the standard library only.

    python -m tests.support.baseimage DEST      # writes the OCI layout into DEST
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

BUSYBOX = Path(os.environ.get("IRCTL_TEST_BUSYBOX", "/bin/busybox"))
EPOCH = 0  # every mtime in the image
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnobody:x:65534:\n"


def busybox_applets(busybox: Path = BUSYBOX) -> list[str]:
    """Applet install paths (`bin/ls`, `usr/bin/env`, ...) as `busybox --list-full` reports them."""
    out = subprocess.run([str(busybox), "--list-full"], check=True, capture_output=True, text=True).stdout
    return sorted({line.strip() for line in out.splitlines() if line.strip() and line.strip() != "bin/busybox"})


def _entries(busybox: Path = BUSYBOX) -> list[tuple[str, str, int, bytes | str | None]]:
    """(path, kind, mode, payload) for every entry of the image: kind is dir, file or symlink."""
    dirs = {"bin", "etc", "root", "tmp", "usr", "usr/bin", "usr/sbin", "sbin", "var"}
    entries: dict[str, tuple[str, str, int, bytes | str | None]] = {}
    for applet in busybox_applets(busybox):
        parent = os.path.dirname(applet)
        while parent:
            dirs.add(parent)
            parent = os.path.dirname(parent)
        entries[applet] = (applet, "symlink", 0o777, "/bin/busybox")
    for d in dirs:
        entries[d] = (d, "dir", 0o1777 if d == "tmp" else 0o700 if d == "root" else 0o755, None)
    entries["bin/busybox"] = ("bin/busybox", "file", 0o755, busybox.read_bytes())
    entries["etc/passwd"] = ("etc/passwd", "file", 0o644, PASSWD.encode())
    entries["etc/group"] = ("etc/group", "file", 0o644, GROUP.encode())
    return [entries[k] for k in sorted(entries)]


def make_busybox_rootfs(dest: Path, busybox: Path = BUSYBOX) -> Path:
    """Create a busybox root filesystem in `dest` (created if missing), all mtimes = 0, owned by root."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    entries = _entries(busybox)
    for path, kind, mode, payload in entries:
        p = dest / path
        if kind == "dir":
            p.mkdir(exist_ok=True)
        elif kind == "file":
            p.write_bytes(payload)  # type: ignore[arg-type]
        else:
            os.symlink(payload, p)  # type: ignore[arg-type]
        if kind != "symlink":
            os.chmod(p, mode)
        if os.geteuid() == 0:
            os.lchown(p, 0, 0)
    for path, kind, _, _ in reversed(entries):  # children before parents so dir mtimes stick
        os.utime(dest / path, ns=(EPOCH, EPOCH), follow_symlinks=False)
    os.utime(dest, ns=(EPOCH, EPOCH))
    return dest


def _layer_tar(busybox: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, kind, mode, payload in _entries(busybox):
            info = tarfile.TarInfo(path)
            info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = EPOCH, 0, 0, "", "", mode
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, payload  # type: ignore[assignment]
                tar.addfile(info)
            else:
                info.size = len(payload)  # type: ignore[arg-type]
                tar.addfile(info, io.BytesIO(payload))  # type: ignore[arg-type]
    return buf.getvalue()


def _write_blob(layout: Path, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _canonical(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def make_busybox_layout(dest_dir: Path, busybox: Path = BUSYBOX, architecture: str = "") -> Path:
    """Write a one-layer OCI image layout into `dest_dir` (ref name `latest`) and return it.

    Same busybox binary → same bytes → same manifest digest.  ``architecture``: the config's (default:
    the host's), for a busybox of another one (``tests.support.arm64``)."""
    layout = Path(dest_dir)
    if layout.exists():
        shutil.rmtree(layout)
    (layout / "blobs" / "sha256").mkdir(parents=True)
    tar_bytes = _layer_tar(busybox)
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, filename="") as z:
        z.write(tar_bytes)
    layer = _write_blob(layout, gz.getvalue())
    config = {
        "architecture": architecture or {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine),
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Env": [PATH_ENV], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(tar_bytes).hexdigest()}"]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "tests.support.baseimage"}],
    }
    config_desc = _write_blob(layout, _canonical(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}],
    }
    manifest_desc = _write_blob(layout, _canonical(manifest))
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            **manifest_desc,
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    }
    (layout / "index.json").write_bytes(_canonical(index))
    (layout / "oci-layout").write_bytes(_canonical({"imageLayoutVersion": "1.0.0"}))
    return layout


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.support.baseimage DEST")
    print(make_busybox_layout(Path(sys.argv[1])))
