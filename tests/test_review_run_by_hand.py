"""`live-appliance run` by a member of the service's group: the way it is told to run instead."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

MEMBER = GROUP = 65534  # nobody: in the group of the run directory below, not its owner
SERVICE = 1  # daemon: stands in for the user live-appliance, the run directory's owner


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="makes the service's place as root"
)
def test_a_group_members_run_by_hand_is_told_a_way_that_can_read_the_key() -> None:
    """An owner in the service's group runs `live-appliance run` by hand, the service
    stopped: the socket's place is the service user's. They were told to run it as that
    user (`sudo -u live-appliance live-appliance run`), who may not read the key: the
    installer keeps it root's alone (0600), the service gets it as a credential, and sudo
    leaves the owner's GEMINI_API_KEY behind. The way they are told must read the key."""
    with tempfile.TemporaryDirectory(prefix="live-appliance-member-") as place:
        tmp = Path(place)
        key = tmp / "api-key"  # as the installer keeps /etc/live-appliance/api-key (not
        # the test's to write): the run under sudo reads it, the owner's shell's key gone
        key.write_text("AIza" + "x" * 35 + "\n")
        key.chmod(0o600)
        run_dir = tmp / "run"
        run_dir.mkdir()
        os.chown(run_dir, SERVICE, GROUP)
        run_dir.chmod(0o750)
        lock = run_dir / "control.sock.lock"  # the stopped service's, mode 0600
        lock.write_text("")
        lock.chmod(0o600)
        os.chown(lock, SERVICE, SERVICE)
        cfg = tmp / "config.toml"
        cfg.write_text(f'[control]\nsocket = "{run_dir / "control.sock"}"\n')
        tmp.chmod(0o755)
        ran = subprocess.run(
            ["setpriv", f"--reuid={MEMBER}", f"--regid={GROUP}", "--clear-groups",
             sys.executable, "-m", "device", "run", "--config", str(cfg)],
            capture_output=True, text=True, timeout=30, cwd=Path(__file__).parents[1],
            env={**os.environ, "GEMINI_API_KEY": "AIza" + "x" * 35, "HOME": str(tmp)},
        )  # fmt: skip
        assert ran.returncode == 1, (ran.returncode, ran.stderr)
        assert "systemctl start live-appliance" in ran.stderr, ran.stderr
        if as_user := re.search(r"sudo -u (\S+) live-appliance run", ran.stderr):
            advised = pwd.getpwnam(as_user[1]).pw_uid
        else:
            assert "sudo live-appliance run" in ran.stderr, ran.stderr
            advised = 0
        reads = subprocess.run(
            ["setpriv", f"--reuid={advised}", f"--regid={advised}", "--clear-groups",
             "test", "-r", str(key)],
        )  # fmt: skip
        assert reads.returncode == 0, f"uid {advised} may not read the key: {ran.stderr}"
