"""Review of the day's change (5b1c533..): what its own tests did not catch."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fakes import RESPEAKER, SPEAKERPHONE, IdlePcm, ListedPortAudio, card

from device.audio import capture as capture_module
from device.audio.capture import Capture

ROOT = Path(__file__).resolve().parents[1]


class _ZerosPcm(IdlePcm):
    """A speakerphone whose own DSP gates its noise: nothing but zeros while nobody talks."""

    def read(self) -> tuple[bytes, int]:
        return bytes(2 * self.period_frames * self.channels), 0


async def test_a_hooks_words_to_an_empty_room_do_not_call_a_gating_microphone_muted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Hands-free, a hook's words (`ctl say`, no press) open a conversation with the
    capture forwarded and no pre-roll: nobody may be there. A speakerphone that gates its
    own noise (the case the warning leaves alone between turns) gives zeros, and the
    journal said "records only digital silence: muted ... or its driver lost its input",
    sending the owner to alsamixer for a microphone that works."""
    listing = ListedPortAudio(card(SPEAKERPHONE, 2))
    monkeypatch.setattr(capture_module, "open_portaudio", lambda: listing)
    monkeypatch.setattr(capture_module, "CapturePcm", _ZerosPcm)
    monkeypatch.setattr(capture_module, "DIGITAL_SILENCE_S", 0.3)
    caplog.set_level(logging.INFO, logger="device.audio.capture")
    mic = Capture(lambda chunk, t: None, preroll=5)
    mic.start(asyncio.get_running_loop())
    try:
        mic.forward(preroll=False)  # StartCapture(camera=False, preroll=False): a hook's turn
        await asyncio.sleep(0.5)
        mic.hold()
    finally:
        mic.close_stream()
    said = [r for r in caplog.records if getattr(r, "LIVE_DEVICE", None) == "microphone"]
    assert said == [], [r.getMessage() for r in said]


class _RightOnlyPcm(IdlePcm):
    """A stereo card whose first input has nothing, its second a quiet room's noise."""

    def read(self) -> tuple[bytes, int]:
        frame = (0).to_bytes(2, "little", signed=True) + (1).to_bytes(2, "little", signed=True)
        return frame * self.period_frames, 0


async def test_a_stereo_card_silent_on_the_input_the_box_hears_is_said(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The box hands on the first channel of a stereo card only. With nothing there (the
    microphone in input 2 of a two-input USB interface, a HAT's left microphone broken)
    the service hears digital silence and the box answers nothing; the other channel's
    sound kept the journal silent, the case the warning is for."""
    listing = ListedPortAudio(card(RESPEAKER, 1))
    monkeypatch.setattr(capture_module, "open_portaudio", lambda: listing)
    monkeypatch.setattr(capture_module, "CapturePcm", _RightOnlyPcm)
    monkeypatch.setattr(capture_module, "DIGITAL_SILENCE_S", 0.3)
    caplog.set_level(logging.INFO, logger="device.audio.capture")
    mic = Capture(lambda chunk, t: None, preroll=5, channels=2)
    mic.start(asyncio.get_running_loop())
    try:
        mic.forward()
        await asyncio.sleep(0.5)
        mic.hold()
    finally:
        mic.close_stream()
    assert mic.channels == 2
    said = [r for r in caplog.records if getattr(r, "LIVE_DEVICE", None) == "microphone"]
    assert [r.levelname for r in said] == ["WARNING"]


def test_the_daemon_leaves_a_fault_handler_already_in_place(tmp_path: Path) -> None:
    """run_daemon pointed faulthandler at whatever sys.stderr was, over one set already:
    pytest's (a copy of the real stderr) after test_control's in-process run_daemon, so
    a later crash in that worker dumped its stack into pytest's capture file, which
    nobody reads once the process is gone; likewise PYTHONFAULTHANDLER's or a wrapper's."""
    config = tmp_path / "config.toml"
    config.write_text(f'[control]\nsocket = "{tmp_path / "control.sock"}"\n')
    dumps = tmp_path / "dumps"
    script = textwrap.dedent(
        f"""
        import faulthandler, os, signal, sys
        from device import appliance, config

        kept = open({str(dumps)!r}, "w")
        faulthandler.enable(file=kept)  # as pytest does, on a copy of the real stderr
        sys.stderr = open(os.devnull, "w")  # as pytest's capture does

        class StuckInADriver:
            def __init__(self, cfg): pass
            async def run(self):
                os.kill(os.getpid(), signal.SIGABRT)

        appliance.Appliance = StuckInADriver
        appliance.run_daemon(config.load({str(config)!r}, key=False))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LIVE_APPLIANCE_LOG_FORMAT": "text"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=60, check=False)  # fmt: skip
    assert result.returncode == -6, result.stderr
    assert "Fatal Python error: Aborted" in dumps.read_text(), result.stderr
