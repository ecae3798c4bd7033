"""What differs between the VM's two architectures."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    debian: str  # Debian's name: amd64, arm64
    kernel_package: str
    qemu: str  # the system emulator
    machine: list[str]  # -machine and -cpu
    console: str  # the kernel's serial console
    wheel_machine: str  # the machine in wheel platform tags: x86_64, aarch64
    oldest_manylinux: int  # the oldest manylinux_2_N tag wheels for it exist with
    foreign: bool  # needs qemu-user-static (binfmt_misc) to run its programs here


def wheel_platforms(arch: Arch, glibc_minor: int) -> tuple[str, ...]:
    """Every manylinux tag a glibc 2.``glibc_minor`` runs on this machine, newest first."""
    machine = arch.wheel_machine
    tags = [f"manylinux_2_{minor}_{machine}"
            for minor in range(glibc_minor, arch.oldest_manylinux - 1, -1)]
    legacy = {"x86_64": ["manylinux2014", "manylinux2010", "manylinux1"],
              "aarch64": ["manylinux2014"]}[machine]
    return (*tags, *(f"{tag}_{machine}" for tag in legacy), f"linux_{machine}")


ARCHES = {
    "amd64": Arch(
        debian="amd64",
        kernel_package="linux-image-amd64",
        qemu="qemu-system-x86_64",
        # -cpu max: the Python wheels assume a newer x86-64 level than qemu's default
        # CPU model has (SIGILL otherwise).
        machine=["-cpu", "max"],
        console="ttyS0",
        wheel_machine="x86_64",
        oldest_manylinux=5,
        foreign=False,
    ),
    "arm64": Arch(
        debian="arm64",
        kernel_package="linux-image-arm64",
        qemu="qemu-system-aarch64",
        machine=["-machine", "virt", "-cpu", "max"],
        console="ttyAMA0",
        wheel_machine="aarch64",
        oldest_manylinux=17,
        foreign=True,
    ),
}
