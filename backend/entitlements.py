"""What the command line grants a graph beyond its named inputs: buildx's ``--allow`` entitlements.

A graph is untrusted; anything it may do that reaches the host or weakens the sandbox is refused unless
the user said so here (``SolveOptions.entitlements``).  The names are buildx's where buildx has one
(``security.insecure``, ``network.host``, ``fs.read=PATH``); ``network.private`` is irctl's own, for
sources that fetch from the host's loopback, link-local or private-range addresses.  This module is the
one home of the names: the CLI parses with :func:`parse`, the solver asks :class:`Entitlements`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from backend.errors import BackendError

INSECURE = "security.insecure"  # RUN --security=insecure: every capability, no masks, all devices
NETWORK_HOST = "network.host"  # RUN --network=host: the host's network namespace
NETWORK_PRIVATE = "network.private"  # http/git sources on loopback, link-local and private addresses
FS_READ = "fs.read"  # fs.read=PATH: git sources may read local repositories under PATH
NAMES = (INSECURE, NETWORK_HOST, NETWORK_PRIVATE, f"{FS_READ}=PATH")


class EntitlementError(BackendError):
    """An ``--allow`` value irctl does not know; ``str()`` names the known ones."""


@dataclass(frozen=True)
class Entitlements:
    insecure: bool = False
    network_host: bool = False
    network_private: bool = False
    fs_read: tuple[Path, ...] = ()  # absolute, symlinks resolved

    def may_read(self, path: str | os.PathLike) -> bool:
        """Whether ``path`` (resolved) lies under a directory granted with ``fs.read=``."""
        real = Path(os.path.realpath(path))
        return any(real == root or root in real.parents for root in self.fs_read)


def parse(values: list[str] | tuple[str, ...]) -> Entitlements:
    """``--allow`` values, in buildx's spelling (``security.insecure``, ``fs.read=/src`` …)."""
    flags: set[str] = set()
    reads: list[Path] = []
    for v in values:
        name, eq, arg = v.partition("=")
        if name == FS_READ and eq and arg:
            reads.append(Path(os.path.realpath(os.path.expanduser(arg))))
        elif not eq and name in (INSECURE, NETWORK_HOST, NETWORK_PRIVATE):
            flags.add(name)
        else:
            raise EntitlementError(f"--allow {v!r}: unknown entitlement (known: {', '.join(NAMES)})")
    return Entitlements(insecure=INSECURE in flags, network_host=NETWORK_HOST in flags,
                        network_private=NETWORK_PRIVATE in flags, fs_read=tuple(dict.fromkeys(reads)))
