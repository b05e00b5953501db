"""Inputs the host-execution and grant tests hand the real CLI: an IR graph written to a file and a
local git repository with one commit, made without reading the host's git configuration."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ir import builder as b
from ir import codec


def write_graph(path: Path, state: b.State) -> Path:
    path.write_bytes(codec.dump_document(b.build_document({"default": state})))
    return path


def make_repo(where: Path, files: dict[str, str], mode: int = 0o700) -> Path:
    """A git repository with one commit; its parent dir is ``mode`` (0700: root's only)."""
    where.mkdir(parents=True, exist_ok=True)
    os.chmod(where, mode)
    repo = where / "repo"
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True, env=env)
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "one"], cwd=repo, check=True, env=env)
    return repo
