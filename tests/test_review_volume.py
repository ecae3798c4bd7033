"""The volume the set_volume tool kept, against the owner's edits of `[audio] volume`
(each edit followed by a restart: `_saved_volume` runs as the daemon starts)."""

from __future__ import annotations

from pathlib import Path

from device.appliance import _saved_volume
from device.persist import StateFile


def test_an_owner_who_edits_the_volume_back_gets_their_value_not_the_tools_old_one(
    tmp_path: Path,
) -> None:
    """Configured 0.5, "louder" to 0.8; the owner sets 0.3, then (a month later) 0.5
    again: they mean 0.5, not the 0.8 the model chose before their first edit."""
    state = StateFile(tmp_path / "state.json")
    state.save(volume=0.8, volume_configured=0.5)
    assert _saved_volume(state, 0.5) == 0.8
    assert _saved_volume(state, 0.3) == 0.3
    assert _saved_volume(state, 0.5) == 0.5, "the tool's volume from before the edits"


def test_a_volume_kept_before_the_configured_one_was_kept_yields_to_an_owners_edit(
    tmp_path: Path,
) -> None:
    """A file from an older version (the volume alone) keeps its volume at the first start,
    but an owner's edit of `[audio] volume` after that wins, as it does for a newer file."""
    state = StateFile(tmp_path / "state.json")
    state.save(volume=0.8)
    assert _saved_volume(state, 0.5) == 0.8
    assert _saved_volume(state, 0.3) == 0.3, "the owner's edit after the upgrade"
