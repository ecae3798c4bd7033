"""A copy run by hand with sudo leaves `ctl` to the members of the service's group, as the
service does."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device.control import ControlServer

#: The group of the socket's directory here (the service's, in /run/live-appliance), and
#: the member of it who asks.
GROUP = MEMBER = 65534

ASK_STATUS = """
import socket, sys
with socket.socket(socket.AF_UNIX) as s:
    s.connect(sys.argv[1])
    s.sendall(b'{"cmd": "status"}\\n')
    print(s.makefile().readline(), end="")
"""


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """/run/live-appliance as systemd makes it (RuntimeDirectoryMode=0750): the group's."""
    place = Path(tempfile.mkdtemp(prefix="live-appliance-run-"))
    try:
        os.chown(place, 0, GROUP)
        place.chmod(0o750)
        yield place
    finally:
        shutil.rmtree(place)


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="runs a copy as root, asks as another"
)
async def test_a_copy_run_as_root_answers_a_member_of_the_services_group(run_dir: Path) -> None:
    """`sudo live-appliance run` beside a stopped service made its socket root:root (0660):
    the owner's own `ctl status` and the doctor, run as a member of the service's group, were
    refused, and told to run as a member of its group, which they were."""

    async def idle(request: dict[str, Any]) -> dict[str, Any]:
        return {"state": "idle"}

    path = run_dir / "control.sock"
    async with ControlServer(path, idle):
        asked = await asyncio.to_thread(
            subprocess.run,
            ["setpriv", f"--reuid={MEMBER}", f"--regid={GROUP}", "--clear-groups",
             "/usr/bin/python3", "-c", ASK_STATUS, str(path)],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    assert asked.returncode == 0, asked.stderr
    assert '"state": "idle"' in asked.stdout, asked.stdout
