"""Review of the day's change (5b1c533..): what its own tests did not catch."""

from __future__ import annotations

import asyncio
import logging

import pytest
from fakes import SPEAKERPHONE, IdlePcm, ListedPortAudio, card

from device.audio import capture as capture_module
from device.audio.capture import Capture


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
