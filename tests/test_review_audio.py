"""Review: the USB microphone and speaker over months (unplugged, browned out, back)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from fakes import config, running
from helpers import until

from device.audio.earcons import earcon
from device.audio.playback import RATE, Playback
from device.states import Earcon


class _Device:
    """An output stream that keeps what it was handed: what the speaker sounded."""

    frame_bytes = 2
    output_latency = 0.0

    def __init__(self) -> None:
        self.active = False
        self.written = bytearray()
        self.lock = threading.Lock()

    def start(self) -> None:
        self.active = True

    def write(self, frames: bytes) -> bool:
        with self.lock:
            self.written += frames
        return False

    def stop(self) -> None:
        self.active = False

    abort = stop

    def is_active(self) -> bool:
        return self.active

    def close(self) -> None:
        self.active = False


class _Speaker(Playback):
    """Playback on `_Device`s: a new one at each open (a card plugged back)."""

    def __init__(self) -> None:
        super().__init__()
        self.devices: list[_Device] = []

    def _open(self, pa: object) -> _Device:  # type: ignore[override]
        self.device_rate, self.channels = RATE, 1
        self.devices.append(_Device())
        return self.devices[-1]


async def test_an_error_beep_while_the_speaker_is_gone_is_not_played_when_it_comes_back() -> None:
    """A press while the card is unplugged gets the error earcon; nobody hears it then. It
    must not sound minutes later, as the owner plugs the card back and all is well."""
    player = _Speaker()
    player.start()
    player.stop()  # the audio keeper closed the speaker: its card went
    player.feed(earcon(Earcon.ERROR))  # a press in the error state
    player.start()  # the card is back
    try:
        await asyncio.sleep(0.3)
        assert bytes(player.devices[-1].written) == b"", "a stale error beep at recovery"
        assert player.drained.is_set()
    finally:
        player.stop()


async def test_presses_while_the_microphone_is_unplugged_beep_nothing_when_it_is_back(
    tmp_path: Path,
) -> None:
    """The keeper closes the speaker with the microphone: presses meanwhile cannot be
    heard, and their error beeps (up to a second of them) sounded as the owner plugged
    the card back, on a box that was fine again."""
    cfg = config(audio={"earcons": True, "reopen_s": 0.1})
    async with running(tmp_path, cfg) as box:
        box.mic.vanish()
        await until(lambda: box.state == "error")
        for _ in range(5):
            await box.ctl("press")
            await box.ctl("release")
        box.mic.alive = True
        await until(lambda: box.state == "idle", within=3)
        assert box.speaker.opened
        assert bytes(box.speaker.buffered) == b"", "stale error beeps at recovery"
