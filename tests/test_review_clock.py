"""Review (clock and SD card): a Pi has no clock of its own, and keeps its state on an SD card."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from google.genai import types

from device import appliance, cli, config
from device.config import Config, ToolsConfig
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


@pytest.mark.parametrize(
    "content", [b"", b"\0" * 40, b"auth_tokens/\xff\xfe"], ids=["empty", "zeros", "not utf-8"]
)
def test_a_token_file_damaged_by_a_power_cut_does_not_stop_the_box_for_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes
) -> None:
    """The minter was writing the next token as the power went: at boot the file is empty,
    or holds zeros or half a character. Empty, the box started and looked again at each
    press; zeros exited with status 2, which systemd never restarts (nor the retry timer),
    so the box stayed dead though the minter wrote a good token a minute later."""
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(config, "INSTALLED_KEY_FILE", tmp_path / "no-installed-key")
    key_file = tmp_path / "token"
    key_file.write_bytes(content)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[live]\napi_key_file = "{key_file}"\n')
    started: list[Config] = []

    def run_daemon(loaded: Config) -> int:
        started.append(loaded)
        return 0

    monkeypatch.setattr(appliance, "run_daemon", run_daemon)
    assert cli.main(["run", "--config", str(cfg)]) == 0
    assert len(started) == 1 and started[0].api_key is None
