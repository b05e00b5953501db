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
    """containerd ``platforms.Parse`` for the common spellings, ``os/arch[/variant]`` or ``arch``, and
    normalised as it normalises them: one platform has one spelling, so ``linux/arm64`` and
    ``linux/arm64/v8`` are one image of an index and ``linux/arm`` is ``TARGETVARIANT=v7``."""
    parts = text.strip().lower().split("/")
    if len(parts) > 3 or not all(ops.PLATFORM_PART.match(p) for p in parts):  # names, never paths (ir.ops)
        raise ValueError(f'"{text}": unknown operating system or architecture: invalid argument')
    if len(parts) == 1:
        if parts[0] in _KNOWN_OS:
            return ops.Platform(os=parts[0])
        parts = ["linux", parts[0]]
    arch, variant = _normal_arch(parts[1], parts[2] if len(parts) == 3 else "")
    return ops.Platform(parts[0], arch, variant)


def _normal_arch(arch: str, variant: str) -> tuple[str, str]:
    """containerd's ``normalizeArch``."""
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        return "arm64", {"8": "", "v8": "", "v8.0": "", "9": "v9", "9.0": "v9", "v9.0": "v9"}.get(variant, variant)
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        return "arm", {"": "v7", "7": "v7", "5": "v5", "6": "v6", "8": "v8"}.get(variant, variant)
    return arch, variant


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
