"""Can this host run a step of another architecture?  Only through a binfmt_misc handler with the
``F`` flag.

A step whose ``ExecOp.platform`` is not the host's runs its programs as they are: the kernel hands
each foreign ELF binary to the interpreter a binfmt_misc handler names (QEMU user emulation).  The
interpreter path lies on the host, not in the step's root filesystem, so the handler must have been
registered with ``F`` (the kernel opened the interpreter then, and uses that open file in every
mount namespace); without it every exec in the container fails with a confusing ENOENT.  Without a
handler at all the step would fail with ``exec format error`` — or, for a binary of a compatible
architecture, run natively and lie about ``uname -m``.  So before such a step runs, the handlers are
read and the step is refused with how to register one.  The handlers are global to the kernel, so a
rootless build (in its user namespace) sees and may use the ones root registered.
"""

from __future__ import annotations

from pathlib import Path

from backend.errors import SolveError

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
MAX_ENTRY = 4096  # a handler's file is a few hundred bytes; anything longer is not one

# GOARCH → (ELF class: 1 = 32-bit, 2 = 64-bit; data: 1 = little-endian, 2 = big; e_machine)
_ELF = {
    "amd64": (2, 1, 0x3E), "386": (1, 1, 0x03), "arm64": (2, 1, 0xB7), "arm": (1, 1, 0x28),
    "ppc64le": (2, 1, 0x15), "ppc64": (2, 2, 0x15), "s390x": (2, 2, 0x16), "riscv64": (2, 1, 0xF3),
    "mips64le": (2, 1, 0x08), "mips64": (2, 2, 0x08), "mipsle": (1, 1, 0x08), "mips": (1, 2, 0x08),
    "loong64": (2, 1, 0x102),
}
_NATIVE = {("amd64", "386")}  # (host, step): the host's CPU runs the step's binaries itself
HOW = "apt-get install qemu-user-static binfmt-support on Debian"


class EmulationError(SolveError):
    """A step's platform cannot run on this host."""


def elf_header(arch: str) -> bytes:
    """The first 20 bytes of an executable of ``arch``: what a handler's magic and mask are matched against."""
    cls, data, machine = _ELF[arch]
    order = "little" if data == 1 else "big"
    return (b"\x7fELF" + bytes([cls, data, 1]) + bytes(9) + (2).to_bytes(2, order) + machine.to_bytes(2, order))


def _entry(path: Path) -> dict[str, str]:
    """A handler's file (``enabled``, ``interpreter …``, ``flags: PF``, ``magic …``) as key → value."""
    try:
        with open(path, "rb") as f:
            text = f.read(MAX_ENTRY).decode("utf-8", "replace")
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        fields[key.rstrip(":")] = value.strip()
    return fields


def _matches(entry: dict[str, str], header: bytes) -> bool:
    try:
        magic = bytes.fromhex(entry["magic"])
        mask = bytes.fromhex(entry.get("mask", "ff" * len(magic)))
        offset = int(entry.get("offset", "0"))
    except (KeyError, ValueError):
        return False  # an extension handler (`extension .jar`) or one this reader does not follow
    if len(mask) != len(magic) or offset < 0 or offset + len(magic) > len(header):
        return False
    return all(header[offset + i] & mask[i] == magic[i] & mask[i] for i in range(len(magic)))


def check(platform: str, host_arch: str, where: str = "", binfmt_dir: Path = BINFMT_DIR) -> None:
    """Refuse (``EmulationError``) a step of ``platform`` (``os/arch[/variant]``) this host cannot run."""
    os_name, _, rest = platform.partition("/")
    arch = rest.partition("/")[0]
    prefix = f"{where}: " if where else ""
    if os_name != "linux":
        raise EmulationError(f"{prefix}the step's platform is {platform}: only linux steps can run here")
    if arch == host_arch or (host_arch, arch) in _NATIVE:
        return
    if arch not in _ELF:
        raise EmulationError(f"{prefix}the step's platform is {platform}: no emulation of {arch} is known to irctl")
    status = binfmt_dir / "status"
    if not status.exists():
        raise EmulationError(f"{prefix}the step runs as {platform} on a {host_arch} host, which needs binfmt_misc: "
                             f"it is not mounted (mount -t binfmt_misc binfmt_misc {binfmt_dir}), then {HOW}")
    if _entry(status).keys() != {"enabled"}:
        raise EmulationError(f"{prefix}the step runs as {platform} on a {host_arch} host, but binfmt_misc is "
                             f"disabled (echo 1 > {status})")
    header = elf_header(arch)
    found = []
    try:
        names = sorted(p.name for p in binfmt_dir.iterdir() if p.name not in ("status", "register"))
    except OSError:
        names = []
    for name in names:
        entry = _entry(binfmt_dir / name)
        if _matches(entry, header):
            if "enabled" in entry and "F" in entry.get("flags", ""):
                return
            found.append((name, entry))
    if not found:
        raise EmulationError(f"{prefix}the step runs as {platform} on a {host_arch} host and no binfmt_misc "
                             f"handler runs {arch} programs: register QEMU's ({HOW})")
    name, entry = found[0]
    if "enabled" not in entry:
        raise EmulationError(f"{prefix}the step runs as {platform}: the binfmt_misc handler {name} is disabled "
                             f"(update-binfmts --enable {name})")
    raise EmulationError(f"{prefix}the step runs as {platform}: the binfmt_misc handler {name} lacks the F flag, "
                         f"so its interpreter cannot be found inside a container; register it with F ({HOW}: "
                         "qemu-user-static's handlers have it)")
