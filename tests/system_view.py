"""This machine's root file system with a private, throw-away writable layer on top.

Tests that need the box's installed layout (the installer's, `/etc/live-appliance`
with its owners and modes) run their commands in a mount namespace of their own
with an overlay on each of a few directories: they see the real paths, and nothing
they write reaches the real system or the other tests running beside them.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest


def require(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: apt-get install {package} (scripts/setup installs it)")
    return path


def device_after(mounts: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m device ARGS` (with a key of the right shape) in a mount namespace of its
    own, after the shell commands `mounts`: a full, tiny or read-only file system made
    for one test, seen by nothing else."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]),
           "GEMINI_API_KEY": "AIza" + "x" * 35}  # fmt: skip
    return subprocess.run(
        [require("unshare", "util-linux"), "--mount", "sh", "-c", f'{mounts} && exec "$@"',
         "sh", sys.executable, "-m", "device", *args],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip


class SystemView:
    """This machine's root, with a private writable layer over the places the scripts touch.

    Each `run` enters a new mount namespace and mounts an overlay on each of
    DIRS; writes land in `base`, kept from one run to the next and invisible to
    everything else on the machine.
    """

    DIRS = ("/etc", "/opt", "/usr/local", "/var/lib")

    def __init__(self, base: Path) -> None:
        self.layers = {d: (base / "upper" / d[1:], base / "work" / d[1:]) for d in self.DIRS}
        for upper, work in self.layers.values():
            upper.mkdir(parents=True)
            work.mkdir(parents=True)

    def mount(self, place: str) -> str:
        """The command, run in the view's own mount namespace, that puts the writable
        layer over `place`."""
        upper, work = self.layers[place]
        options = f"lowerdir={place},upperdir={upper},workdir={work}"
        return f"mount -t overlay overlay -o {options} {place}"

    def mounts(self) -> str:
        """Every place's mount, as one shell command."""
        return " && ".join(self.mount(place) for place in self.layers)

    def run(
        self, argv: list[str], *, stdin: int | None = subprocess.DEVNULL, env: dict | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [require("unshare", "util-linux"), "--mount", "sh", "-c",
             f'{self.mounts()} && exec "$@"', "view", *argv],
            stdin=stdin, capture_output=True, text=True, env=env, timeout=60, check=False,
        )

    def setup(self, script: str) -> None:
        result = self.run(["sh", "-ec", script])
        assert result.returncode == 0, f"preparing the view failed: {result.stderr}"

    def snapshot(self) -> dict[str, tuple[int, bytes | str]]:
        """Every file in the writable layers: mode and content (a link's target)."""
        files: dict[str, tuple[int, bytes | str]] = {}
        for upper, _ in self.layers.values():
            for path in sorted(upper.rglob("*")):
                info = path.lstat()
                if stat.S_ISLNK(info.st_mode):
                    body: bytes | str = os.readlink(path)
                elif stat.S_ISREG(info.st_mode):
                    body = path.read_bytes()
                else:
                    body = b""
                files[str(path)] = (info.st_mode, body)
        return files
