"""What an owner's command writes under sudo, on a file system that keeps no owners."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from device.audio.pcm import write_wav


def test_sudo_ask_keeps_the_reply_on_a_file_system_that_refuses_a_new_owner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sudo live-appliance ask "..." --audio /mnt/stick/reply.wav`, a FAT stick mounted by
    root (fstab): FAT keeps no owners, and the kernel answers a chown to another user with
    EPERM (here a chown that refuses stands in for it, none being mountable here). The
    reply was asked, paid for, and then not written ("Operation not permitted"), where
    before the reply was made the owner's it was written; it is written, as the mount
    makes every file there."""
    monkeypatch.setenv("SUDO_UID", "4321")  # `sudo` by uid 4321
    monkeypatch.setenv("SUDO_GID", "4322")
    monkeypatch.setattr(os, "geteuid", lambda: 0)  # root's, as under sudo

    def fat_chown(fd: int, uid: int, gid: int) -> None:
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(os, "fchown", fat_chown)
    out = tmp_path / "reply.wav"
    write_wav(out, b"\x01\x00" * 2400, 24000, private=True)
    assert out.read_bytes()[:4] == b"RIFF"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reply.wav"]  # no .tmp left
