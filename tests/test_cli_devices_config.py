"""`devices` needs the [audio] settings only: a key or a persona file that is not right
yet is the doctor's to say, and must not hide the sound cards from the owner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from device import cli


@pytest.fixture
def listed(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []

    def print_devices(audio: Any) -> int:
        calls.append(audio)
        return 0

    monkeypatch.setattr("device.audio.devices.print_devices", print_devices)
    monkeypatch.setattr("device.doctor.daemon.running_status", lambda socket: None)
    return calls


def test_devices_lists_despite_a_quoted_key_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listed: list[Any]
) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[audio]\ninput_device = "USB"\n')
    monkeypatch.setenv("GEMINI_API_KEY", '"AIza-quoted"')
    assert cli.main(["devices", "--config", str(cfg)]) == 0
    assert listed and listed[0].input_device == "USB"


def test_devices_lists_before_the_persona_file_is_written(
    tmp_path: Path, listed: list[Any]
) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[live]\nsystem_instruction_file = "{tmp_path}/persona.txt"\n')
    assert cli.main(["devices", "--config", str(cfg)]) == 0
    assert listed


def test_devices_still_refuses_a_bad_audio_setting(tmp_path: Path, listed: list[Any]) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("[audio]\nchunk_ms = 'fast'\n")
    assert cli.main(["devices", "--config", str(cfg)]) == 2
    assert not listed
