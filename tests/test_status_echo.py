"""`ctl status` and `doctor echo` on a push-to-talk box: the owner reads one answer about
the echo, not the service's plan in one and what is in use in the other."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from fakes import config, running
from helpers import daemon_saying

from device.audio import echo
from device.doctor.audio import _mic_plan, check_echo
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status


async def test_ctl_status_on_push_to_talk_does_not_claim_the_canceller_the_doctor_denies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """32-bit Raspberry Pi OS, push-to-talk, the default settings: `ctl status --json` said
    "mic_during_playback": "cancel" and the journal's ready line "microphone while
    speaking: cancel", while `doctor echo` said the box would gate (nothing cancels here)."""
    monkeypatch.setitem(sys.modules, echo.BINDING, None)
    caplog.set_level(logging.INFO)
    cfg = config(button={"mode": "push_to_talk"})
    async with running(tmp_path, cfg) as box:
        status = box.appliance.status()
    doctor = _mic_plan(Context(cfg, Options(), Progress()))
    assert doctor.data["mic_during_playback"] == "gate"
    assert status["mic_during_playback"] in (None, "gate"), status["mic_during_playback"]
    ready = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ready:")]
    assert ready and not any("cancel" in line for line in ready), ready


async def test_the_doctor_still_warns_of_the_noise_suppressor_a_push_to_talk_service_lost(
    tmp_path: Path,
) -> None:
    """The module failed mid-run on a push-to-talk box with noise suppression: the doctor,
    beside the service's own status, says the service runs without it."""
    cfg = config(button={"mode": "push_to_talk"}, audio={"noise_suppression": True})
    async with running(tmp_path, cfg) as box:
        box.appliance._cleaner_failed("pywebrtc-audio failed: RuntimeError: -11")
        status = box.appliance.status()
    async with daemon_saying(status) as sock:
        doctor_cfg = config(
            control={"socket": str(sock)},
            button={"mode": "push_to_talk"},
            audio={"noise_suppression": True},
        )
        result = await check_echo(Context(doctor_cfg, Options(), Progress()))
    assert result.status is Status.WARN, result
    assert "pywebrtc-audio failed" in result.measured
    assert "hands-free: None" not in result.measured, result.measured
