"""buildx's flags that shape the build itself, read as buildx reads them: ``--add-host``,
``--shm-size``, ``--ulimit``, ``--label``, ``--pull``.

Each parser follows the Go code docker's CLI uses for the same flag (``opts.ValidateExtraHost``,
``units.RAMInBytes``, ``units.ParseUlimit``, buildx's ``listToMap``), so a script's values mean the
same here; what they become is IR (``ir.ops.HostIP``, ``ir.ops.Ulimit``) in its normal form, which
``ir.validate`` checks again like any other graph.  Errors are one line naming the flag and value.
"""

from __future__ import annotations

import ipaddress
import re
import sys

from frontends.files import MAX_SIZE
from ir import ops
from irctl.errors import UserError
from irctl.options import key_values

_SIZE = re.compile(r"(\d+(?:\.\d+)?) ?([kmgtp]?)i?b?\Z", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def request_options(add_host: list[str], shm: str, ulimit: list[str], label: list[str]) -> dict:
    """The ``irctl.compiling.CompileOptions`` fields these flags set."""
    return {"extra_hosts": extra_hosts(add_host), "shm_size": shm_size(shm), "ulimits": ulimits(ulimit),
            "labels": labels(label)}


def _shown(value: str) -> str:
    """A value as an error quotes it: on one line, whatever the user (or a script) passed."""
    return value if value.isprintable() else repr(value)


def extra_hosts(values: list[str]) -> tuple[ops.HostIP, ...]:
    """``--add-host HOST:IP`` or ``HOST=IP`` (an IPv6 address may be in brackets), in the order given;
    comma-separated too (a string slice in buildx)."""
    out = []
    for value in (v for item in values for v in item.split(",") if v):
        host, eq, ip = value.partition("=")
        if not eq:
            host, _, ip = value.partition(":")  # docker cuts at the first colon: "h:::1" is h, ::1
        if ip.startswith("[") and ip.endswith("]"):
            ip = ip[1:-1]
        if ip == "host-gateway":
            raise UserError(f"--add-host {_shown(value)}: host-gateway is Docker's address of the host, which "
                            "irctl's RUN network cannot reach (a private namespace); with --network host --allow "
                            "network.host the host is 127.0.0.1")
        try:
            address = ipaddress.ip_address(ip)
            if "%" in ip:  # a zone (fe80::1%eth0): the IR takes none (ir.validate), nor does Docker
                raise ValueError(ip)
        except ValueError:
            raise UserError(f"--add-host {_shown(value)}: invalid IP address {ip!r} (HOST:IP or HOST=IP)") from None
        if not ops.HOST_NAME.match(host):
            raise UserError(f"--add-host {_shown(value)}: invalid host name {host!r} "
                            "(letters, digits, '.', '-' and '_', at most 253)")
        out.append(ops.HostIP(host, str(address)))
    return tuple(out)


def shm_size(value: str) -> int:
    """``--shm-size 64m``: bytes, with docker's binary units (k, m, g, t, p; ``64mb`` and ``64MiB`` too);
    "" or 0: the default."""
    if not value:
        return 0
    m = _SIZE.match(value.strip())
    if m is None:
        raise UserError(f"--shm-size {_shown(value)}: invalid size (a number of bytes, or with a unit: 64m, 1g)")
    size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if size > ops.MAX_SHM_SIZE:
        raise UserError(f"--shm-size {_shown(value)}: larger than {ops.MAX_SHM_SIZE >> 30}g")
    return size


def ulimits(values: list[str]) -> tuple[ops.Ulimit, ...]:
    """``--ulimit NAME=SOFT[:HARD]`` (HARD defaults to SOFT; -1: unlimited); a name given twice: the last."""
    found: dict[str, ops.Ulimit] = {}
    for value in values:
        name, eq, limits = value.partition("=")
        if not eq:
            raise UserError(f"--ulimit {_shown(value)}: expected NAME=SOFT[:HARD]")
        if name not in ops.ULIMIT_NAMES:
            from frontends.errors import did_you_mean  # lazy: only an error pays for difflib

            raise UserError(f"--ulimit {_shown(value)}: invalid ulimit type {name!r}"
                            f"{did_you_mean(name, ops.ULIMIT_NAMES) or ' (' + ', '.join(ops.ULIMIT_NAMES) + ')'}")
        parts = limits.split(":")
        if len(parts) > 2:
            raise UserError(f"--ulimit {_shown(value)}: too many limit values, can only have up to two, soft[:hard]")
        try:
            soft, hard = int(parts[0]), int(parts[-1])
        except ValueError:
            raise UserError(f"--ulimit {_shown(value)}: limits are integers (-1: unlimited)") from None
        if min(soft, hard) < -1 or max(soft, hard) >= 1 << 63:
            raise UserError(f"--ulimit {_shown(value)}: limits are -1 (unlimited) or 0 to 2^63-1")
        if hard != -1 and (soft == -1 or soft > hard):
            raise UserError(f"--ulimit {_shown(value)}: ulimit soft limit must be less than or equal to hard limit")
        found[name] = ops.Ulimit(name, soft, hard)
    return tuple(found[n] for n in sorted(found))


def labels(values: list[str]) -> dict[str, str]:
    """``--label K=V`` (``K`` alone: an empty value, as buildx's ``listToMap``); a later one wins."""
    return key_values(values, "--label")


def pull(flag: bool, policy: str | None) -> bool:
    """Whether to ask the registry again: bare ``--pull`` and ``--pull=true`` (buildx), ``always`` and
    ``newer`` (podman's: irctl asks the registry for the digest and reuses what it already holds, which
    is what "newer" means) do; ``false`` and ``missing`` (the default) do not.  ``never`` is refused:
    irctl has no offline mode that would fail rather than fetch a base image it lacks."""
    if policy is None:
        return flag
    word = policy.lower()
    if word in ("true", "always", "newer", "1"):
        return True
    if word in ("false", "missing", "0"):
        return False
    if word == "never":
        raise UserError("--pull=never: irctl cannot promise not to fetch (a base image not yet in its cache is "
                        "always pulled); --pull=missing (the default) reuses what is there")
    raise UserError(f"--pull={_shown(policy)}: expected true, false, always, missing or newer")


def stdin_build_file() -> bytes:
    """``-f -``: the build file from stdin, bounded as a build file on disk is (``frontends.files``)."""
    data = sys.stdin.buffer.read(MAX_SIZE + 1)
    if len(data) > MAX_SIZE:
        raise UserError(f"-f -: the build file on stdin is larger than {MAX_SIZE >> 20} MiB")
    return data
