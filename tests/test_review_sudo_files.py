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


OWNER_UID, OWNER_GID = 4321, 4322  # who typed `sudo`


@pytest.mark.skipif(os.geteuid() != 0, reason="what `sudo` writes: needs root")
def test_sudo_ask_through_a_link_keeps_the_reply_for_the_owner_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sudo live-appliance ask "..." --audio ~/latest.wav`, latest.wav a link the owner made
    to where today's reply goes: a link is written in place, through it, and the reply
    was made root's and 0644 by sudo's umask, any local user's to play and not the
    owner's to replace, what the README says it is not ("yours alone to read, also under
    sudo"). Written through the link, it is the owner's and 0600, as when no link is
    there; a device or a pipe there is written as it is."""
    monkeypatch.setenv("SUDO_UID", str(OWNER_UID))
    monkeypatch.setenv("SUDO_GID", str(OWNER_GID))
    (tmp_path / "replies").mkdir()
    target = tmp_path / "replies" / "today.wav"
    link = tmp_path / "latest.wav"
    link.symlink_to(target)
    umask = os.umask(0o022)  # sudo's, as on Raspberry Pi OS
    try:
        write_wav(link, b"\x01\x00" * 2400, 24000, private=True)
        write_wav("/dev/null", b"\x01\x00" * 2400, 24000, private=True)
    finally:
        os.umask(umask)
    assert link.is_symlink() and target.read_bytes()[:4] == b"RIFF"
    saved = target.stat()
    assert saved.st_mode & 0o077 == 0, f"others may read it: {saved.st_mode & 0o777:o}"
    assert (saved.st_uid, saved.st_gid) == (OWNER_UID, OWNER_GID)
    null = os.stat("/dev/null")
    assert (null.st_uid, null.st_mode & 0o777) == (0, 0o666), "the device was made private"
