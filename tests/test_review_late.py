"""Review of the doctor against a running service, `ctl status`'s audio line and the
microphone's digital silence (1ad2b5e..870c52e)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fakes import config
from helpers import daemon_saying, open_refused

from device import config as config_mod
from device.doctor.audio import check_echo
from device.doctor.daemon import summary_lines
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status
from device.doctor.runner import held_by_the_service
from device.doctor.settings import check_key

IDLE: dict[str, Any] = {
    "ready": True, "state": "idle", "status": "idle", "mode": "toggle",
    "session_open": False, "faults": [], "turns": [],
}  # fmt: skip


async def test_the_echo_line_after_an_edit_the_service_has_not_read_says_no_fall_back() -> None:
    """An owner sets [audio] mic_during_playback = "open" (a headset) and runs the doctor
    before restarting: the service still runs with "cancel", its plan complete. The echo
    line said "the running service fell back to cancel ...: None"."""
    said = IDLE | {"mic_during_playback": "cancel", "mic_missing": None}
    async with daemon_saying(said) as sock:
        cfg = config(control={"socket": str(sock)}, button={"mode": "toggle"},
                     audio={"mic_during_playback": "open"})  # fmt: skip
        result = await check_echo(Context(cfg, Options(), Progress()))
    assert "None" not in result.measured, result.measured
    assert "fell back" not in result.measured, result.measured
    assert result.fix is not None and "restart" in result.fix


async def test_ctl_status_on_a_push_to_talk_box_names_no_canceller() -> None:
    """The default box is push-to-talk: no canceller runs (none is needed, nor can one run
    on a 32-bit system), but its plan keeps the configured "cancel". `ctl status` said
    "microphone while speaking: cancel", as if echo cancellation ran."""
    status = IDLE | {"mode": "push_to_talk", "mic_during_playback": "cancel", "mic_missing": None}
    audio = [line for line in summary_lines(status) if line.startswith("audio:")]
    assert not any("while speaking: cancel" in line for line in audio), audio


async def test_the_echo_line_says_the_noise_suppressor_the_service_lost() -> None:
    """Push-to-talk with [audio] noise_suppression = true: the module failed mid-run, the
    service goes on without noise suppression (its plan says why, `ctl status` shows it),
    and the doctor's echo line said PASS, "noise suppression on"."""
    said = IDLE | {"mode": "push_to_talk", "mic_during_playback": "cancel",
                   "mic_missing": "pywebrtc-audio failed: RuntimeError: -11"}  # fmt: skip
    async with daemon_saying(said) as sock:
        cfg = config(control={"socket": str(sock)}, audio={"noise_suppression": True})
        result = await check_echo(Context(cfg, Options(), Progress()))
    assert result.status is Status.WARN, result
    assert "pywebrtc-audio failed" in result.measured


def test_the_speaker_line_does_not_take_the_microphones_reason() -> None:
    """A USB speakerphone unplugged, named `input_device = "speakerphone"`: both fail to
    open, the microphone last, so the service's status names the microphone's reason. The
    speaker's line said it as its own (it names a "speaker")."""
    said = IDLE | {
        "state": "error",
        "status": "error: microphone: cannot open: no input device matches 'speakerphone'",
        "faults": ["microphone", "speaker"],
    }
    speaker = held_by_the_service("speaker", said, 17)
    mic = held_by_the_service("mic", said, 17)
    assert speaker.status is Status.FAIL and mic.status is Status.FAIL
    assert "input device" not in speaker.measured, speaker.measured
    assert "no input device matches 'speakerphone'" in mic.measured


async def test_the_key_line_without_sudo_does_not_send_a_working_box_to_write_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The installer's key in /etc/live-appliance/api-key (root's alone, the service's
    credential, read first) and [live] api_key_file for a token not written yet: the
    service works. The doctor run without sudo said to write the key into the token's
    file, "no restart needed", not that only root may read the key the service uses."""
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    installed = tmp_path / "api-key"
    installed.write_text("AIzaInstalledKey\n")
    monkeypatch.setattr(config_mod, "INSTALLED_KEY_FILE", installed)
    open_refused(monkeypatch, lambda path: path == installed)  # as the owner finds it
    settings = tmp_path / "config.toml"
    settings.write_text(f"[live]\napi_key_file = {str(tmp_path / 'token')!r}\n")
    cfg = config_mod.load(settings, key=False)
    result = await check_key(Context(cfg, Options(), Progress(spinner=False)))
    assert result.fix is not None and "only root may read" in result.fix.lower(), result
    assert not result.fix.startswith("Write the key"), result.fix
