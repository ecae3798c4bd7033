"""Review: a box in a home for months, power-cycled and updated (unclean stops, upgrades)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from device.persist import StateFile

ROOT = Path(__file__).resolve().parents[1]


def test_a_volume_kept_has_reached_the_card_before_it_replaces_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A power cut in the half minute after "set the volume to 30 %" (the box unplugged to
    move it) left state.json empty: the kernel writes a new file's data back later than
    the rename that puts it in place. The volume was forgotten, and every start said so."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    real_replace = Path.replace

    def replace(self: Path, target: str | os.PathLike[str]) -> Path:
        assert str(self) in synced, "renamed into place before its data was on the card"
        return real_replace(self, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(Path, "replace", replace)
    state = StateFile(tmp_path / "state.json")
    state.save(volume=0.3)
    assert StateFile(tmp_path / "state.json").load() == {"volume": 0.3}
