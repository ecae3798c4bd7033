"""A person talking over the box hands-free ("cancel") just after a gap in its reply: the
real speaker's writer feeds the real echo canceller's reference, as in the appliance."""

from __future__ import annotations

import numpy as np
import pytest
import soxr
from helpers import until
from test_audio_echo import VOICE_DBFS, frames_dbfs, reply, spoken
from test_audio_playback import _hands_free, _ride

from device.audio import pcm
from device.audio.echo import GUARD_DB, RATE, Canceller
from device.audio.playback import RATE as SPEAKER_RATE

BLOCK = RATE * 40 // 1000  # the capture's 40 ms blocks
ACOUSTIC_S = 0.003  # from the writer's count of when a sample plays to the microphone
ECHO_GAIN = 0.2  # the box's voice at the microphone: -34 dBFS, the person's -26
STRETCH_S = 1.5  # the box speaks this long, its link stalls, and it speaks as long again


async def _talk_over(monkeypatch: pytest.MonkeyPatch, gap_s: float) -> float:
    """The box speaks, its link stalls `gap_s`, it speaks on, and 100 ms into that the
    person says "Stop, what about Sunday?": how much quieter their words went to the
    service than they said them (the median over the 20 ms frames of speech, in dB)."""
    talker = np.zeros(round((2 * STRETCH_S + gap_s) * RATE))
    said = spoken("Stop, what about Sunday?", -26.0)[:RATE]
    words_at = round((STRETCH_S + gap_s + 0.1) * RATE)
    talker[words_at : words_at + said.size] = said
    box = pcm.from_float(soxr.resample(reply(2 * STRETCH_S), RATE, SPEAKER_RATE))
    first = round(STRETCH_S * SPEAKER_RATE) * 2
    rng = np.random.default_rng(5)
    with _hands_free(monkeypatch) as (player, clock, far):
        canceller, t0, out = Canceller(far), clock.now, []

        def capture() -> None:
            """The microphone's blocks recorded by now: the person, and the box's echo."""
            while t0 + (len(out) + 1) * BLOCK / RATE <= clock.now:
                at = len(out) * BLOCK
                if at + BLOCK > talker.size:
                    return
                echo = pcm.to_float(far.heard(t0 + at / RATE - ACOUSTIC_S, BLOCK).tobytes())
                mic = talker[at : at + BLOCK] + echo * ECHO_GAIN + rng.normal(0, 1e-4, BLOCK)
                recorded = np.frombuffer(pcm.from_float(mic), dtype=np.int16)
                out.append(canceller.process(recorded, t0 + at / RATE))

        player.feed(box[:first])
        await until(lambda: player.heard().size > 0)
        await _ride(player, clock, STRETCH_S - 0.05 + gap_s, capture)  # 50 ms still queued
        player.feed(box[first:])
        await _ride(player, clock, STRETCH_S + 0.05, capture)
    cleaned = np.concatenate(out)
    assert frames_dbfs(cleaned, 1.0, STRETCH_S).max() < VOICE_DBFS  # the box alone: not heard
    start, end = words_at / RATE, (words_at + said.size) / RATE
    as_said, heard = frames_dbfs(talker, start, end), frames_dbfs(cleaned, start, end)
    speech = as_said > VOICE_DBFS
    return float(np.median(as_said[speech] - heard[speech]))


async def test_words_just_after_a_gap_in_the_reply_are_heard_as_over_a_reply_without_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A jittery link leaves 300 ms between two stretches of the reply. A new run of the
    speaker's stream made the canceller start afresh and lower a person talking over the
    box GUARD_DB for its next second of speaking: their "Stop" never reached the service as
    speech, and the reply talked on over them."""
    without_gap = await _talk_over(monkeypatch, 0.0)
    after_gap = await _talk_over(monkeypatch, 0.3)
    assert after_gap < without_gap + GUARD_DB / 2, (after_gap, without_gap)
