"""Platforms as BuildKit spells them, and the build args it predefines from them.

``--platform`` values and ``FROM --platform`` are read with containerd's ``platforms.Parse`` rules;
every stage of every frontend sees the same predefined args (``BUILDPLATFORM``, ``TARGETOS``, …,
``TARGETSTAGE`` and the proxy args given with ``--build-arg``), which need no ``ARG``.
"""

from __future__ import annotations

from frontends import BuildRequest
from ir import ops
from ir.roots import platform_string  # noqa: F401 (frontends' name for it; defined once, with the root names)

PROXY_ARGS = ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY",
              "http_proxy", "https_proxy", "ftp_proxy", "no_proxy", "all_proxy")
_KNOWN_OS = ("linux", "windows", "darwin", "freebsd", "netbsd", "openbsd", "solaris", "illumos", "aix")


def parse_platform(text: str) -> ops.Platform:
    """containerd ``platforms.Parse`` for the common spellings: ``os/arch[/variant]`` or ``arch``."""
    parts = text.strip().lower().split("/")
    if len(parts) > 3 or not all(ops.PLATFORM_PART.match(p) for p in parts):  # names, never paths (ir.ops)
        raise ValueError(f'"{text}": unknown operating system or architecture: invalid argument')
    if len(parts) == 1:
        if parts[0] in _KNOWN_OS:
            return ops.Platform(os=parts[0])
        parts = ["linux", parts[0]]
    arch = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm", "armel": "arm"}.get(parts[1], parts[1])
    variant = parts[2] if len(parts) == 3 else {"armhf": "v7", "armel": "v6"}.get(parts[1], "")
    return ops.Platform(parts[0], arch, variant)


def predefined_args(request: BuildRequest, target: str) -> dict[str, str]:
    """BuildKit ``defaultArgs``: the platform args, TARGETSTAGE and any proxy args given."""
    out: dict[str, str] = {}
    for prefix, p in (("BUILD", request.build_platform), ("TARGET", request.platform)):
        out[prefix + "PLATFORM"] = platform_string(p)
        out[prefix + "OS"] = p.os
        out[prefix + "ARCH"] = p.architecture
        out[prefix + "VARIANT"] = p.variant
    out["TARGETSTAGE"] = target
    for k in PROXY_ARGS:
        if k in request.build_args:
            out[k] = request.build_args[k]
    return out
