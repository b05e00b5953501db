"""Run the irctl CLI as an unprivileged user (default `irctl-test`, `$IRCTL_TEST_USER`) through `runuser`.

The suite itself runs as root (as CI does); `UserCLI` copies what the user needs into a temp dir the user
owns (the repo's packages, and — when the test interpreter lives where the user cannot read, e.g. under
/root — the installed dependencies, for a system python3 of the same version), then runs
`runuser -u USER -- env HOME=... python3 -m irctl ...`. Tests skip, with the reason, where the user, their
subordinate ids, newuidmap/newgidmap, runc or busybox are missing.
"""

from __future__ import annotations

import functools
import importlib.metadata as md
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import e2e_skip_reason

USER = os.environ.get("IRCTL_TEST_USER", "irctl-test")
REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("ir", "frontends", "backend", "irctl")


@functools.cache
def rootless_skip_reason() -> str | None:
    base = e2e_skip_reason()
    if base:
        return base
    if shutil.which("runuser") is None:
        return "rootless: runuser missing (util-linux)"
    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        return (f"rootless: no user {USER!r} (as root: useradd -m {USER} && "
                f"usermod --add-subuids 300000-365535 --add-subgids 300000-365535 {USER})")
    from backend.userns import problems

    missing = problems(USER, pw.pw_uid, pw.pw_gid)
    return "rootless: " + "; ".join(missing) if missing else None


def _dist_closure(name: str) -> list[md.Distribution]:
    from packaging.markers import Marker

    seen: dict[str, md.Distribution] = {}
    todo = [name]
    while todo:
        n = todo.pop()
        key = re.sub(r"[-_.]+", "-", n).lower()
        if key in seen:
            continue
        try:
            dist = md.distribution(n)
        except md.PackageNotFoundError:
            continue
        seen[key] = dist
        for req in dist.requires or []:
            spec, _, marker = req.partition(";")
            if marker and (("extra" in marker) or not Marker(marker).evaluate()):
                continue
            todo.append(re.split(r"[\s<>=!~\[(]", spec.strip(), maxsplit=1)[0])
    return list(seen.values())


def _copy_site(dest: Path, roots: tuple[str, ...] = ("irctl",)) -> None:
    """The installed files of these distributions and their dependencies (dist-infos too: entry points)."""
    dists = {d.metadata["Name"]: d for r in roots for d in _dist_closure(r)}
    for dist in dists.values():
        base = Path(dist.locate_file(""))
        tops = {Path(f).parts[0] for f in dist.files or () if not str(f).startswith("..")}
        for top in tops:
            src = base / top
            if top.startswith("__editable__") or top.endswith(".pth") or not src.exists():
                continue
            if src.is_dir():
                shutil.copytree(src, dest / top, dirs_exist_ok=True, symlinks=True,
                                ignore=shutil.ignore_patterns("__pycache__", "RECORD"))
            else:
                shutil.copy2(src, dest / top)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


class UserCLI:
    """`irctl` as USER: `cli.run("build", ...)`; `cli.home` is the user's HOME (the cache is under it)."""

    def __init__(self, root: Path, *, with_tests: bool = False):
        self.pw = pwd.getpwnam(USER)
        self.root = root
        self.home = root / "home"
        src = root / "src"
        for pkg in PACKAGES + (("tests", "spec", "benchmarks") if with_tests else ()):
            shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
        if with_tests:
            shutil.copy2(REPO / "pyproject.toml", src / "pyproject.toml")
        self.src = src
        self.pythonpath = [src]
        self.python = sys.executable
        if not self._works():
            site = root / "site"
            site.mkdir()
            _copy_site(site, ("irctl", "pytest", "hypothesis", "pytest-xdist") if with_tests else ("irctl",))
            self.pythonpath.append(site)
            self.python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or "/usr/bin/python3"
        self.home.mkdir()
        self.chown(root)
        if not self._works():
            pytest.skip(f"rootless: {USER} cannot run a Python {sys.version_info[0]}.{sys.version_info[1]} "
                        f"with irctl's dependencies (tried {sys.executable} and {self.python})")

    def chown(self, path: Path) -> None:
        for dirpath, dirnames, filenames in os.walk(path):
            for name in [".", *dirnames, *filenames]:
                os.lchown(os.path.join(dirpath, name), self.pw.pw_uid, self.pw.pw_gid)

    def env(self, extra: dict[str, str] | None = None) -> list[str]:
        # REGISTRY_AUTH_FILE: the tests' skopeo, as uid 0 of irctl's user namespace, would read
        # /run/containers/0/auth.json, and /run/containers (root's podman, 0700) refuses the lookup
        return ["env", "-i", *(f"{k}={v}" for k, v in (extra or {}).items()), f"HOME={self.home}", f"USER={USER}",
                f"LOGNAME={USER}", f"REGISTRY_AUTH_FILE={self.home}/.config/containers/auth.json",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                f"PYTHONPATH={os.pathsep.join(map(str, self.pythonpath))}", "PYTHONDONTWRITEBYTECODE=1",
                "LANG=C.UTF-8"]

    def can_use_fuse(self) -> bool:
        res = subprocess.run(["runuser", "-u", USER, "--", "test", "-r", "/dev/fuse", "-a", "-w", "/dev/fuse"])
        return res.returncode == 0 and shutil.which("fuse-overlayfs") is not None

    def _works(self) -> bool:
        probe = "import typer, msgpack, zstandard, lark, httpx, jsonschema, rich, irctl.app"
        if self.src.joinpath("tests").is_dir():
            probe += ", pytest, hypothesis, xdist"
        res = subprocess.run(["runuser", "-u", USER, "--", *self.env(), self.python, "-c", probe],
                             capture_output=True, cwd="/")
        return res.returncode == 0

    def pytest(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
        """pytest as USER in the user namespace (`-p tests.rootless.enter`), on the copied tests."""
        return subprocess.run(["runuser", "-u", USER, "--", *self.env(), self.python, "-m", "pytest",
                               "-p", "tests.rootless.enter", "-p", "no:cacheprovider", *args],
                              capture_output=True, text=True, cwd=self.src, timeout=timeout)

    def run(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 300) -> Result:
        import time

        t0 = time.monotonic()
        res = subprocess.run(["runuser", "-u", USER, "--", *self.env(env), self.python, "-m", "irctl", *args],
                             capture_output=True, text=True, cwd=cwd or self.root, timeout=timeout)
        return Result(res.returncode, res.stdout, res.stderr, time.monotonic() - t0)


@pytest.fixture(scope="session")
def user_cli() -> UserCLI:
    reason = rootless_skip_reason()
    if reason:
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="irctl-rootless.", dir="/tmp"))
    os.chmod(root, 0o755)
    try:
        yield UserCLI(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
