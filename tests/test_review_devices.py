"""Review: odd sound card lists, as a Pi lists them (folded into the proper files later)."""

from __future__ import annotations

import asyncio

import pytest
from fakes import (
    ALSA_DEFAULT,
    HDMI,
    HEADPHONES,
    HEADSET,
    IdlePcm,
    ListedPortAudio,
    SilentOutput,
    card,
)

from device.audio import capture as capture_module
from device.audio import playback as playback_module
from device.audio import stream as stream_module
from device.audio.capture import Capture
from device.audio.playback import Playback


async def test_a_configured_index_among_two_identical_cards_is_found_again_after_a_reopen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two of the same cheap USB sound card: their names differ only in the hw: number, so
    the owner names the microphone by its index (`input_device = 3`). The keeper's first
    reopen (a card that hiccupped) looked it up by the name without its number, which
    both cards have: "matches several input devices", and the box stayed deaf until a
    restart."""
    listing = ListedPortAudio(HEADPHONES, HDMI, card(HEADSET, 2), card(HEADSET, 3), ALSA_DEFAULT)
    monkeypatch.setattr(capture_module, "open_portaudio", lambda: listing)
    monkeypatch.setattr(capture_module, "CapturePcm", IdlePcm)
    IdlePcm.opened.clear()
    mic = Capture(lambda chunk, t: None, device=3, preroll=1)
    loop = asyncio.get_running_loop()
    mic.start(loop)
    mic.close_stream()  # the keeper closes it, and opens it again
    try:
        mic.start(loop)
    finally:
        mic.close_stream()
    assert IdlePcm.opened == ["hw:3,0", "hw:3,0"]


async def test_a_speaker_set_by_index_among_two_identical_cards_is_found_again_after_a_reopen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same for the speaker (`output_device = 3`)."""
    listing = ListedPortAudio(HEADPHONES, HDMI, card(HEADSET, 2), card(HEADSET, 3), ALSA_DEFAULT)
    monkeypatch.setattr(stream_module, "open_portaudio", lambda: listing)
    monkeypatch.setattr(playback_module, "OutputStream", SilentOutput)
    SilentOutput.opened.clear()
    speaker = Playback(device=3)
    loop = asyncio.get_running_loop()
    speaker.start(loop)
    speaker.close_stream()
    try:
        speaker.start(loop)
    finally:
        speaker.close_stream()
    assert SilentOutput.opened == [3, 3]
