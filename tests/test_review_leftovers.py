"""Review (leftovers-52): the small things the last stop saw and left."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import soxr

from device.audio import pcm
from device.audio.capture import RATE, Capture


@pytest.mark.parametrize("card_rate", [48000, 44100, 32000])
async def test_a_release_on_a_card_not_at_16_khz_sends_all_that_was_said_before_it(
    card_rate: int,
) -> None:
    """A card at another rate is resampled; what the resampler still holds was recorded
    before the newest sample read. A person speaks up to the instant the button comes up:
    the turn (the chunks up to the one holding the release, as the mic feed sends) must
    hold all of it, the last chunk stamped with when its last sample was really said."""
    turn: list[tuple[bytes, float]] = []
    capture = Capture(lambda data, t: turn.append((data, t)), chunk_ms=20)
    capture._loop = asyncio.get_running_loop()  # as start() would, without a device
    capture._resampler = soxr.ResampleStream(card_rate, RATE, 1, dtype="int16")
    period = card_rate * 20 // 1000
    voice = pcm.from_float(pcm.tone(1000.0, 10_000, card_rate))
    start = time.monotonic()  # when the card recorded its first sample
    release = start + 1.2071  # the button comes up mid-period: said until then
    said = round((release - start) * card_rate)
    frames = 0
    while not turn or turn[-1][1] < release:
        if frames <= said < frames + period:
            capture.finish(release)
        block = voice[frames * 2 : (frames + period) * 2]
        if frames + period > said:  # silence after the release
            block = block[: max(0, said - frames) * 2].ljust(period * 2, b"\0")
        frames += period
        capture._deliver(block, start + frames / card_rate)
        await asyncio.sleep(0)
        assert frames < said + card_rate, "the chunk holding the release never came"
    sent = pcm.to_float(b"".join(data for data, _ in turn))
    loud = np.flatnonzero(np.abs(sent) > 0.25)
    heard_until = start + (loud[-1] + 1) / RATE
    assert heard_until == pytest.approx(release, abs=0.002), (
        f"the last {(release - heard_until) * 1000:.1f} ms said before the release not sent"
    )
    assert turn[-1][1] == pytest.approx(start + sent.size / RATE, abs=0.0005), (
        "the last chunk's stamp is when its last sample was recorded"
    )
