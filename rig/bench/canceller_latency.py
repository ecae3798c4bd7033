"""The capture latency the echo canceller adds, measured on the box's own capture.

The box's `Capture` runs here, in the benchmark's process, on the loopback
microphone, twice: as it runs with `mic_during_playback = "open"` (no cleaner)
and with the canceller working (a reply playing as its reference, so it never
rests). For every chunk it hands over: from when the chunk's last sample was
recorded (the sound card's own clock, as the box stamps its chunks; what the
canceller holds back is in it) to the chunk on the event loop.

Measured from outside, with markers played into the microphone and found again
at the server, the two settings were not alike: a daemon that hears itself
(`open`) keeps answering its own echo, the speaker starting and stopping moved
the microphone sink's latency, and each mode's markers spread differently over
a 40 ms chunk (the figure read -15.3 and -4.8 ms in two runs).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from device.audio.capture import Capture
from device.audio.echo import Canceller, FarEnd
from device.config import AudioConfig
from rig.bench.harness import progress
from rig.loopback import PulseLoopback

CHUNK_MS = AudioConfig().chunk_ms
SETTLE_CHUNKS = 25  # the first second: the device starting, the canceller converging
FEED_S = 0.04  # the reference is handed over this often...
AHEAD_S = 0.1  # ...this long before it "plays", as the speaker's writer does
#: Captures opened in turn without and with the canceller: each opening's chunks wait
#: for the loop at a phase of its own (on the loopback 5 ms more, for every chunk, in some
#: openings of either kind), which a single pair read as the canceller's (14.3 ms added
#: in one run, 9.0-9.3 in each of six pairs measured alone the same hour).
ROUNDS = 5


def chunk_waits(
    loopback: PulseLoopback, voice: np.ndarray, rate: int, seconds: float
) -> list[tuple[list[float], list[float]]]:
    """Ms from each chunk's last sample to the event loop, ROUNDS times in turn (each
    capture open `seconds`): without a cleaner, and with the canceller cancelling `voice`
    (mono int16 at `rate`) as the speaker's sound."""
    progress(f"capture latency, open and cancel in turn, {ROUNDS} x {seconds:g} s each")
    loopback.apply_env()
    try:
        return [
            (asyncio.run(_waits(None, seconds)), asyncio.run(_waits((voice, rate), seconds)))
            for _ in range(ROUNDS)
        ]
    finally:
        loopback.restore_env()


async def _waits(reference: tuple[np.ndarray, int] | None, seconds: float) -> list[float]:
    far = FarEnd() if reference is not None else None
    waits: list[float] = []
    capture = Capture(
        lambda data, t: waits.append((time.monotonic() - t) * 1000),
        chunk_ms=CHUNK_MS,
        cleaner=Canceller(far) if far is not None else None,
    )
    capture.start()
    try:
        if far is not None and reference is not None:
            await _speak(far, *reference, seconds)
        else:
            await asyncio.sleep(seconds)
    finally:
        capture.stop()
    return waits[SETTLE_CHUNKS:]


async def _speak(far: FarEnd, voice: np.ndarray, rate: int, seconds: float) -> None:
    """Hand `far` the voice on one unbroken timeline, a piece every FEED_S, each AHEAD_S
    before it plays: the canceller has a reference throughout and never rests."""
    piece = round(FEED_S * rate)
    start = time.monotonic() + AHEAD_S
    for k in range(round(seconds / FEED_S)):
        at = k * piece % max(1, voice.size - piece)
        far.played(voice[at : at + piece], rate, start + k * piece / rate)
        await asyncio.sleep(max(0.0, start - AHEAD_S + (k + 1) * FEED_S - time.monotonic()))
