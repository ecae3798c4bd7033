"""A jittery home link, and the pauses it makes in what the box sends and plays: the
socket stalls while the person talks; the speaker is fed a sound, then nothing a while."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fakes import FakeParts, running
from helpers import until
from test_audio_playback import _Device
from test_go_away import CHUNK_S, heard_ms, server, talking

from device.audio.earcons import earcon
from device.audio.playback import Playback
from device.live.wire import MIC_RATE
from device.states import Earcon
from rig.server.server import LiveServer

__all__ = ["server"]  # the fixture, shared with test_go_away


async def test_speech_through_a_short_stall_of_the_link_reaches_the_service_whole_in_order(
    server: LiveServer,
) -> None:
    """A busy Wi-Fi holds the socket 1.5 s in the middle of a push-to-talk question: what
    the person said meanwhile waits in the box and goes out after it, every chunk once and
    in order, on the same connection (no reconnect, no word lost)."""
    chunks = [bytes([i, 0]) * int(MIC_RATE * CHUNK_S) for i in range(1, 31)]
    async with talking(server) as talk:
        await talk.first_turn(server)
        talk.outbox.put("activity_start")
        for i, chunk in enumerate(chunks):
            if i == 5:
                server.stall(1.5)
            talk.outbox.put("audio", chunk)
            await asyncio.sleep(CHUNK_S)
        talk.outbox.put("activity_end")
        await until(lambda: len(heard_ms(server)) == 1, within=10)
    sent = [entry.data for entry in server.entries(direction="in") if entry.kind == "audio"]
    assert sent == chunks
    assert len(server.log.connections()) == 1, "the stall was ridden out, not reconnected"


class _Speaker48k(Playback):
    """The real speaker on a card that plays 48 kHz only (a USB speakerphone, a HAT's raw
    hw: device): the reply's 24 kHz goes through the resampler."""

    def __init__(self) -> None:
        super().__init__()
        self.card = _Device()

    def _open(self, pa: object) -> _Device:  # type: ignore[override]
        self.device_rate, self.channels = 48000, 1
        self._resampler = self._new_resampler()
        return self.card

    def heard(self) -> np.ndarray:
        with self.card.lock:
            return np.frombuffer(bytes(self.card.written), dtype=np.int16)


@dataclass
class _Card48kParts(FakeParts):
    def speaker(self):  # type: ignore[no-untyped-def]
        return self._keep("speaker", _Speaker48k())


async def test_the_go_ahead_beep_sounds_whole_on_a_48_khz_card(tmp_path: Path) -> None:
    """A press on a box whose card plays 48 kHz: the beep that says "go ahead" sounds whole,
    ending in its fade, before the person talks. The resampler held its last 17 ms back
    until the next sound was fed (the release's beep, seconds later): the beep stopped with
    a click, and its end came glued to the next one."""
    async with running(tmp_path, parts_class=_Card48kParts) as box:
        speaker: _Speaker48k = box.parts.made["speaker"]
        await box.ctl("press")
        await asyncio.wait_for(speaker.wait_drained(), 5)
        heard = speaker.heard()
    beep = np.frombuffer(earcon(Earcon.LISTEN_START), dtype=np.int16)
    sounded = heard[: np.flatnonzero(heard)[-1] + 1]
    assert abs(sounded.size - 2 * beep.size) <= 48, f"{sounded.size} of {2 * beep.size} samples"
    assert np.abs(sounded[-10:]).max() < 0.01 * 32768, "cut short, not faded"
