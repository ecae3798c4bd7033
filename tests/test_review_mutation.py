"""Mutants of the last stop's changes outside the echo canceller that the tests let live,
killed by what an owner reads: the doctor's echo line on a push-to-talk box."""

from __future__ import annotations

import sys

import pytest
from fakes import config
from helpers import daemon_saying

from device.audio import echo
from device.doctor.audio import _mic_plan, check_echo
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status


def _without_the_binding(monkeypatch: pytest.MonkeyPatch) -> None:
    """32-bit Raspberry Pi OS: pywebrtc-audio has no wheel, nothing imports."""
    monkeypatch.setitem(sys.modules, echo.BINDING, None)


def test_the_doctor_on_a_push_to_talk_box_without_the_binding_says_hands_free_would_gate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default box (push-to-talk, "cancel") on 32-bit Raspberry Pi OS needs no
    canceller and the service does not look; the owner who would switch to hands-free
    learns from the doctor that the box would mute itself while it speaks, and why; the
    line still passes (nothing is wrong as the box is set)."""
    _without_the_binding(monkeypatch)
    result = _mic_plan(Context(config(), Options(), Progress()))
    assert result.status is Status.PASS, result
    assert "while the box speaks hands-free: gate (cancel cannot run: " in result.measured
    assert result.data["mic_during_playback"] == "gate"


def test_the_doctor_on_a_push_to_talk_box_with_the_binding_says_cancel_plainly() -> None:
    result = _mic_plan(Context(config(), Options(), Progress()))
    assert result.status is Status.PASS, result
    assert "while the box speaks hands-free: cancel;" in result.measured, result.measured
    assert "cannot run" not in result.measured and "None" not in result.measured
    assert "(push-to-talk: the microphone is open only while the button is held)" in result.measured


async def test_the_echo_line_beside_a_push_to_talk_service_asks_for_no_restart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The push-to-talk service keeps its configured "cancel" (it needs no canceller, and
    did not look); the doctor finds hands-free would gate here. That is no configuration
    edited since the service started: the line passes, and asks for no restart."""
    _without_the_binding(monkeypatch)
    said = {"ready": True, "state": "idle", "status": "idle", "mode": "push_to_talk",
            "session_open": False, "faults": [], "turns": [],
            "mic_during_playback": "cancel", "mic_missing": None}  # fmt: skip
    async with daemon_saying(said) as sock:
        ctx = Context(config(control={"socket": str(sock)}), Options(), Progress())
        result = await check_echo(ctx)
    assert result.status is Status.PASS, result
    assert "restart" not in (result.fix or "")
