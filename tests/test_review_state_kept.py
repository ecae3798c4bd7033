"""The state file's failure as ctl status and the doctor say it: never after it is over."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from fakes import running
from test_sd_card import writes_fail

from device.doctor.daemon import summary_lines


async def test_a_volume_set_back_to_the_one_kept_clears_the_card_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """"Louder" on a full card is not kept; "back as it was" sets the volume the card
    holds. Nothing is unkept any more, and the next start plays what plays now: ctl status
    still said the volume goes back at the next start, and the doctor kept warning of a
    full card after the owner had made room, until a volume the card did not hold."""
    async with running(tmp_path / "box") as box:
        box.appliance.set_volume(0.4)  # kept
        with monkeypatch.context() as full:
            writes_fail(full, tmp_path / "box", errno.ENOSPC)
            box.appliance.set_volume(0.9)
        assert box.appliance.status()["settings_not_kept"] is not None
        box.appliance.set_volume(0.4)  # room made, or not: the card holds this one
        status = box.appliance.status()
    assert status["settings_not_kept"] is None, status["settings_not_kept"]
    assert not any("not kept" in line for line in summary_lines(status))


async def test_ctl_status_says_the_volume_the_next_start_plays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A volume kept before the card filled is the one the next start plays: ctl status
    (and the README's card line) said the configured one, which the owner then looked
    for and never heard."""
    async with running(tmp_path / "box") as box:
        configured = box.appliance.volume()
        box.appliance.set_volume(0.4)  # kept
        with monkeypatch.context() as full:
            writes_fail(full, tmp_path / "box", errno.ENOSPC)
            box.appliance.set_volume(0.9)
        said = "\n".join(summary_lines(box.appliance.status()))
    async with running(tmp_path / "box") as box:
        played = box.appliance.volume()
    assert played == 0.4 != configured
    assert "not kept" in said and "configured" not in said, said
