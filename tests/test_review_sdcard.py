"""The SD card full or read-only, /run full: the box keeps answering, and the owner is told
what is wrong, and how to put it right."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from device.control import AlreadyRunning, single_instance


def test_a_full_run_directory_does_not_stop_the_daemon_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/run is a small tmpfs: full (a runaway log of another program), the lock opens but
    its pid cannot be written, and the daemon ended at every start with a traceback,
    restarted by systemd until its start limit. The pid is only a courtesy to the next
    one refused; the lock itself still keeps a second daemon out."""
    path = tmp_path / "control.sock"

    def full(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", full)
    with single_instance(path), pytest.raises(AlreadyRunning, match="another process holds"):
        single_instance(path).__enter__()
