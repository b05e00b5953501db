"""backend.runtime.emulation: a foreign step runs only through a binfmt_misc handler with the F flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.runtime.emulation import EmulationError, check, elf_header

# Debian qemu-user-static's registration, as /proc/sys/fs/binfmt_misc/qemu-aarch64 shows it
AARCH64 = """enabled
interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
flags: PF
offset 0
magic 7f454c460201010000000000000000000200b700
mask ffffffffffffff00fffffffffffffffffeffffff
"""
JAR = "enabled\ninterpreter /usr/bin/jexec\nflags: \nextension .jar\n"


def binfmt(tmp_path: Path, status: str | None = "enabled", **handlers: str) -> Path:
    d = tmp_path / "binfmt_misc"
    d.mkdir()
    if status is None:
        return d  # not mounted: an empty directory
    (d / "status").write_text(status + "\n")
    (d / "register").write_text("")
    for name, text in handlers.items():
        (d / name.replace("_", "-")).write_text(text)
    return d


def test_a_registered_handler_with_f_lets_the_step_run(tmp_path):
    d = binfmt(tmp_path, jar=JAR, qemu_aarch64=AARCH64)
    check("linux/arm64", "amd64", "Dockerfile:3", binfmt_dir=d)
    check("linux/arm64/v8", "amd64", binfmt_dir=d)


def test_the_host_platform_needs_no_handler(tmp_path):
    d = binfmt(tmp_path, status=None)
    check("linux/amd64", "amd64", binfmt_dir=d)
    check("linux/386", "amd64", binfmt_dir=d)  # the CPU runs it itself


@pytest.mark.parametrize("setup, says", [
    (lambda t: binfmt(t, status=None), "binfmt_misc: it is not mounted (mount -t binfmt_misc binfmt_misc "),
    (lambda t: binfmt(t, status="disabled", qemu_aarch64=AARCH64), "binfmt_misc is disabled"),
    (lambda t: binfmt(t, jar=JAR), "no binfmt_misc handler runs arm64 programs: register QEMU's (apt-get install "
                                   "qemu-user-static binfmt-support on Debian)"),
    (lambda t: binfmt(t, qemu_aarch64=AARCH64.replace("flags: PF", "flags: P")), "handler qemu-aarch64 lacks the F flag"),
    (lambda t: binfmt(t, qemu_aarch64=AARCH64.replace("enabled", "disabled")),
     "handler qemu-aarch64 is disabled (update-binfmts --enable qemu-aarch64)"),
    (lambda t: binfmt(t, qemu_arm=AARCH64.replace("b700", "2800")), "no binfmt_misc handler runs arm64"),  # arm's
])
def test_a_step_that_cannot_run_is_refused_saying_how_to_fix_it(tmp_path, setup, says):
    with pytest.raises(EmulationError) as e:
        check("linux/arm64", "amd64", "Dockerfile:7", binfmt_dir=setup(tmp_path))
    message = str(e.value)
    assert message.startswith("Dockerfile:7: ") and says in message and "\n" not in message


def test_hostile_handler_files_are_not_followed(tmp_path):
    d = binfmt(tmp_path, bad1="enabled\nflags: F\nmagic zz\n", bad2="enabled\nflags: F\noffset 99\nmagic 7f\n",
               bad3="enabled\nflags: F\nmagic 7f454c46\nmask ff\n", big="enabled\n" + "x" * 100_000)
    with pytest.raises(EmulationError, match="no binfmt_misc handler"):
        check("linux/arm64", "amd64", binfmt_dir=d)


def test_other_systems_and_unknown_architectures_are_refused(tmp_path):
    d = binfmt(tmp_path, qemu_aarch64=AARCH64)
    with pytest.raises(EmulationError, match="only linux steps"):
        check("windows/amd64", "amd64", binfmt_dir=d)
    with pytest.raises(EmulationError, match="no emulation of sparc9 is known"):
        check("linux/sparc9", "amd64", binfmt_dir=d)


def test_the_elf_header_matches_the_kernel_s_own_handler():
    """The header built for arm64 is what real arm64 binaries start with (Debian's busybox-static:arm64)."""
    from tests.support.arm64 import ARM64_BUSYBOX

    if not ARM64_BUSYBOX.is_file():
        pytest.skip(f"{ARM64_BUSYBOX} missing")
    head = ARM64_BUSYBOX.read_bytes()[:20]
    mask = bytes.fromhex("ffffffffffffff00fffffffffffffffffeffffff")
    assert bytes(a & m for a, m in zip(head, mask)) == bytes(a & m for a, m in zip(elf_header("arm64"), mask))


def test_ci_fails_rather_than_skips_without_the_arm64_base(monkeypatch, tmp_path):
    from tests.support import arm64

    monkeypatch.setattr(arm64, "ARM64_BUSYBOX", tmp_path / "missing")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="busybox-static:arm64"):
        arm64.require()
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception):
        arm64.require()
