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
    pip_platforms: tuple[str, ...]  # wheel platform tags the image's Python 3.11 takes
    foreign: bool  # needs qemu-user-static (binfmt_misc) to run its programs here


def wheel_platforms(machine: str, oldest: int) -> tuple[str, ...]:
    """Every manylinux tag Debian 12's glibc (2.36) runs, newest first."""
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(36, oldest - 1, -1)]
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
        pip_platforms=wheel_platforms("x86_64", oldest=5),
        foreign=False,
    ),
    "arm64": Arch(
        debian="arm64",
        kernel_package="linux-image-arm64",
        qemu="qemu-system-aarch64",
        machine=["-machine", "virt", "-cpu", "max"],
        console="ttyAMA0",
        pip_platforms=wheel_platforms("aarch64", oldest=17),
        foreign=True,
    ),
}
