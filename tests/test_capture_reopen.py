"""A microphone opened again (the audio keeper's reopen after its device went, or a card
plugged back in) starts afresh: nothing of the last open reaches the next one.

The capture runs its real reader thread on a stand-in ALSA device (16 kHz mono, so what
is read is what is handed over), listed by a stand-in PortAudio.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from typing import ClassVar

import numpy as np
import pytest
from fakes import SPEAKERPHONE, IdlePcm, ListedPortAudio, card
from helpers import until

from device.audio import capture as capture_module
from device.audio.alsa import AlsaError
from device.audio.capture import RATE, Capture

CHUNK_FRAMES = RATE // 50  # the capture's 20 ms chunks


class _LivePcm(IdlePcm):
    """A device that records as time passes, every sample `value` (0: a muted microphone);
    `fails` makes its reads fail as an unplugged card's do."""

    value: ClassVar[int] = 1
    fails: ClassVar[bool] = False

    def start(self) -> None:
        self._started, self._read = time.monotonic(), 0

    def read(self) -> tuple[bytes, int]:
        if self.fails:
            raise AlsaError(errno.ENODEV, "No such device")
        recorded = int((time.monotonic() - self._started) * self.rate)
        frames, self._read = recorded - self._read, recorded
        return np.full(frames, self.value, dtype=np.int16).tobytes(), 0


class _ScriptedPcm(IdlePcm):
    """A device whose reads bring `reads` (frame counts of `value`), then nothing."""

    reads: ClassVar[list[int]] = []
    value: ClassVar[int] = 1

    def read(self) -> tuple[bytes, int]:
        if not self.reads:
            return b"", 0
        return np.full(self.reads.pop(0), self.value, dtype=np.int16).tobytes(), 0


@pytest.fixture
def devices(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A speakerphone listed; its ALSA device is `_LivePcm` unless a test sets another."""
    listing = ListedPortAudio(card(SPEAKERPHONE, 2))
    monkeypatch.setattr(capture_module, "open_portaudio", lambda: listing)
    monkeypatch.setattr(capture_module, "CapturePcm", _LivePcm)
    monkeypatch.setattr(_LivePcm, "value", 1)
    monkeypatch.setattr(_LivePcm, "fails", False)
    return monkeypatch


def _capture(handed: list[tuple[bytes, float]], preroll: int | None = None) -> Capture:
    return Capture(
        lambda chunk, t: handed.append((chunk, t)), device_rate=RATE, channels=1, preroll=preroll
    )


async def test_a_turn_on_a_reopened_microphone_gets_its_first_words(
    devices: pytest.MonkeyPatch,
) -> None:
    """The card's clock starts again at a reopen: kept from the last open, the times of the
    new chunks ran as far behind as the device was away, and a press's first words
    (recorded after the button's edge) were taken for older and never sent."""
    handed: list[tuple[bytes, float]] = []
    mic = _capture(handed, preroll=5)
    loop = asyncio.get_running_loop()
    mic.start(loop)
    try:
        await until(lambda: mic._last_read is not None)  # it read audio (twice a second)
        mic.close_stream()  # the card went; the keeper opens it again a second later
        await asyncio.sleep(1.0)
        mic.start(loop)
        await asyncio.sleep(0.2)
        edge = time.monotonic()
        mic.forward(since=edge, preroll=False)  # the press
        await asyncio.sleep(0.6)
    finally:
        mic.close_stream()
    after = [t for _, t in handed if t > edge]
    assert len(after) >= 0.4 * 50, f"{len(after)} chunks of the turn's first 0.6 s sent"


async def test_a_reopened_microphone_sends_nothing_read_before_it_closed(
    devices: pytest.MonkeyPatch,
) -> None:
    """Half a chunk read just before the device went was put in front of the next open's
    first chunk: old sound, and every chunk after it a half chunk late."""
    devices.setattr(capture_module, "CapturePcm", _ScriptedPcm)
    devices.setattr(_ScriptedPcm, "value", 7)
    devices.setattr(_ScriptedPcm, "reads", [CHUNK_FRAMES * 3 // 2])  # a chunk and a half
    handed: list[tuple[bytes, float]] = []
    mic = _capture(handed)
    loop = asyncio.get_running_loop()
    mic.start(loop)
    try:
        await until(lambda: len(handed) == 1)
        mic.close_stream()
        devices.setattr(_ScriptedPcm, "value", 9)
        devices.setattr(_ScriptedPcm, "reads", [CHUNK_FRAMES] * 3)
        mic.start(loop)
        await until(lambda: len(handed) >= 3)
    finally:
        mic.close_stream()
    first = np.frombuffer(handed[1][0], dtype=np.int16)
    assert set(first.tolist()) == {9}, "the last open's audio went out with the next one's"


async def test_a_reopened_microphone_is_given_its_start_up_time_again(
    devices: pytest.MonkeyPatch,
) -> None:
    """Just reopened, before its first audio: the keeper's look found "no audio for 1.0 s"
    (the time since the last open's last read) and closed it again, and the speaker with
    it, instead of giving it the start-up grace a new device gets."""
    mic = _capture([])
    loop = asyncio.get_running_loop()
    mic.start(loop)
    try:
        await until(lambda: mic._last_read is not None)
        mic.close_stream()
        await asyncio.sleep(1.0)
        devices.setattr(capture_module, "CapturePcm", IdlePcm)  # nothing read yet
        mic.start(loop)
        assert mic.trouble(stale_s=0.5, grace_s=3.0) is None
    finally:
        mic.close_stream()


async def test_a_microphone_reopened_after_its_reads_failed_runs(
    devices: pytest.MonkeyPatch,
) -> None:
    """Unplugged (its reads fail), then reopened on the card back: it reads, and says it
    runs; kept failed, the keeper took it for broken and reopened it again and again."""
    handed: list[tuple[bytes, float]] = []
    mic = _capture(handed)
    loop = asyncio.get_running_loop()
    devices.setattr(_LivePcm, "fails", True)
    mic.start(loop)
    try:
        await until(lambda: not mic.running)
        mic.close_stream()
        devices.setattr(_LivePcm, "fails", False)
        mic.start(loop)
        await until(lambda: len(handed) >= 5)
        assert mic.running and mic.trouble(stale_s=0.5) is None
    finally:
        mic.close_stream()


async def test_a_muted_microphone_is_said_again_at_each_open_and_not_after_a_working_one(
    devices: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Digital silence is said once an open: a microphone reopened still muted is said
    again, and one plugged in that works is not `silent` (`ctl status`, the doctor) for
    the last one's mute until a turn."""
    devices.setattr(capture_module, "DIGITAL_SILENCE_S", 0.3)
    devices.setattr(_LivePcm, "value", 0)
    caplog.set_level(logging.INFO, logger="device.audio.capture")
    mic = _capture([], preroll=5)
    loop = asyncio.get_running_loop()
    said: list[bool] = []
    try:
        for _ in range(2):  # still muted after the reopen
            mic.start(loop)
            mic.forward()
            await asyncio.sleep(0.6)
            mic.hold()
            said.append(mic.silent)
            mic.close_stream()
        devices.setattr(_LivePcm, "value", 1)  # another microphone, between turns
        mic.start(loop)
        await asyncio.sleep(0.1)
        said.append(mic.silent)
    finally:
        mic.close_stream()
    lines = [r for r in caplog.records if getattr(r, "LIVE_ERROR", None) == "digital silence"]
    assert said == [True, True, False]
    assert len(lines) == 2, [r.getMessage() for r in lines]
