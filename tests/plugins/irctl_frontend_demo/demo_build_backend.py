"""A minimal in-tree PEP 517 backend: builds the one-module wheel of this demo by hand, so the
test installs it offline without setuptools or wheel (``--no-build-isolation``)."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

NAME, DIST, VERSION = "irctl_frontend_demo", "irctl_frontend_demo", "0.1.0"
HERE = Path(__file__).parent
INFO = f"{DIST}-{VERSION}.dist-info"


def _files() -> dict[str, bytes]:
    return {
        f"{NAME}.py": (HERE / f"{NAME}.py").read_bytes(),
        f"{INFO}/METADATA": f"Metadata-Version: 2.1\nName: irctl-frontend-demo\nVersion: {VERSION}\n".encode(),
        f"{INFO}/WHEEL": b"Wheel-Version: 1.0\nGenerator: demo_build_backend\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{INFO}/entry_points.txt": b"[irctl.frontends]\ndemo = irctl_frontend_demo:FRONTEND\n",
    }


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None) -> str:
    filename = f"{DIST}-{VERSION}-py3-none-any.whl"
    files = _files()
    record = "\n".join([*(_record_line(n, d) for n, d in files.items()), f"{INFO}/RECORD,,"]) + "\n"
    with zipfile.ZipFile(Path(wheel_directory) / filename, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(f"{INFO}/RECORD", record)
    return filename


def get_requires_for_build_wheel(config_settings=None) -> list[str]:
    return []
