"""Review (clock and SD card): a Pi has no clock of its own, and keeps its state on an SD card."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.genai import types

from device.config import ToolsConfig
from device.tools import ToolBox

#: The last shutdown's time, as fake-hwclock (or timesyncd's own clock file) sets it at boot.
LAST_SHUTDOWN = datetime(2026, 11, 28, 18, 40, tzinfo=UTC)


class NoActions:
    def volume(self) -> float:
        return 0.5

    def set_volume(self, level: float) -> None:
        pass

    def end_conversation(self) -> None:
        pass


async def ask_time(root: Path) -> dict[str, Any]:
    toolbox = ToolBox(ToolsConfig(enabled=("get_time",)), NoActions(), root=root,
                      now=lambda: LAST_SHUTDOWN)
    response = await toolbox.run(types.FunctionCall(id="c", name="get_time", args={}))
    assert response.response is not None
    return response.response


async def test_a_clock_not_yet_set_from_the_network_is_told_as_maybe_wrong(tmp_path: Path) -> None:
    """A box switched off for a week boots at its last shutdown's time; with NTP out of
    reach (UDP 123 blocked where HTTPS is not) it stays there: asked the time, the model
    said last week's date and time as if they were sure."""
    (tmp_path / "run/systemd/timesync").mkdir(parents=True)  # timesyncd runs, not synced
    response = await ask_time(tmp_path)
    assert response["date"] == "2026-11-28"
    assert "not been set from the network" in response["warning"]


async def test_a_clock_set_from_the_network_is_told_plainly(tmp_path: Path) -> None:
    (tmp_path / "run/systemd/timesync").mkdir(parents=True)
    (tmp_path / "run/systemd/timesync/synchronized").touch()
    response = await ask_time(tmp_path)
    assert "warning" not in response and response["time"] == "18:40"


async def test_a_clock_kept_by_another_time_service_is_told_plainly(tmp_path: Path) -> None:
    """chrony or ntpd leave no such mark: nothing says the clock is wrong."""
    response = await ask_time(tmp_path)
    assert "warning" not in response and response["date"] == "2026-11-28"
