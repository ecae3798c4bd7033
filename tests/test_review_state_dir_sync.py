"""The volume kept survives a power cut after the rename, not only before it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from device.persist import StateFile


def test_a_volume_kept_has_its_rename_on_the_card_before_save_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rename lives in the directory, written back on the kernel's own time: a power
    cut in the half minute after "set the volume to 30 %" brought the old volume back
    (or, for a first save, none). Only a sync of the directory after the rename keeps it."""
    path = tmp_path / "state.json"
    dirs_synced_after_rename: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode) and path.exists() and "0.3" in path.read_text():
            dirs_synced_after_rename.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    StateFile(path).save(volume=0.3)
    assert dirs_synced_after_rename == [str(tmp_path)]
