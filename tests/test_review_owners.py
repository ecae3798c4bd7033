"""Several people look after one box over SSH: the owner who installed it (sudo), a
member of the service's group, a guest in neither. What each may read of what the box
and its commands write."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rig.daemon import rig_settings, to_toml
from rig.server.server import ServerThread

OWNER_UID, OWNER_GID = 4321, 4322  # who typed `sudo`


@pytest.fixture
def server() -> Iterator[ServerThread]:
    with ServerThread(pace=0, reply_seconds=0.3) as thread:
        yield thread


@pytest.mark.skipif(os.geteuid() != 0, reason="what `sudo` writes: needs root")
def test_sudo_ask_keeps_the_reply_audio_for_the_owner_who_asked_not_for_every_user(
    server: ServerThread, tmp_path: Path
) -> None:
    """`sudo live-appliance ask "..." --audio /tmp/reply.wav` (sudo: only root may read the
    key) left the reply root's and 0644: any guest on the box could play what the box
    told the owner, and the owner could not write over it without sudo again."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(to_toml(rig_settings(server.base_url, tmp_path)))
    out = tmp_path / "reply.wav"
    out.write_bytes(b"an earlier run's, root's")
    out.chmod(0o644)
    env = {
        **os.environ,
        "GEMINI_API_KEY": server.api_key,
        "SSL_CERT_FILE": server.ca_file,
        "SUDO_UID": str(OWNER_UID),
        "SUDO_GID": str(OWNER_GID),
    }
    result = subprocess.run(
        [sys.executable, "-m", "device", "ask", "Hello", "--audio", str(out), "--config", str(cfg)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: os.umask(0o022),  # sudo's, as on Raspberry Pi OS
    )
    assert result.returncode == 0, result.stderr
    saved = out.stat()
    assert out.read_bytes()[:4] == b"RIFF"
    assert saved.st_mode & 0o077 == 0, f"others may read it: {saved.st_mode & 0o777:o}"
    assert (saved.st_uid, saved.st_gid) == (OWNER_UID, OWNER_GID)
