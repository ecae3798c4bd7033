"""The check the rig tests hold the daemon's audio to (`speech.assert_received_whole`)."""

from __future__ import annotations

import numpy as np
import pytest
from speech import MIC_RATE, assert_received_whole, chirp

from device.audio import pcm


def _with_gap(speech: bytes, at_s: float, gap_s: float) -> bytes:
    """`speech` with `gap_s` of silence put in at `at_s`, as a player that ran dry leaves it."""
    at = int(at_s * MIC_RATE) * 2
    return speech[:at] + bytes(int(gap_s * MIC_RATE) * 2) + speech[at:]


def _padded(middle: bytes) -> bytes:
    return bytes(MIC_RATE) + middle + bytes(MIC_RATE)


def test_a_gap_the_microphone_carried_is_the_daemons_to_carry_too() -> None:
    speech = chirp(2.0)
    heard = _padded(_with_gap(_with_gap(speech, 0.6, 0.03), 1.3, 0.05))
    assert_received_whole(heard[3000:], speech, heard)


def test_the_daemon_dropping_part_of_the_speech_still_fails() -> None:
    speech = chirp(2.0)
    heard = _padded(_with_gap(speech, 0.6, 0.03))
    cut = len(bytes(MIC_RATE)) + int(1.4 * MIC_RATE) * 2
    dropped = heard[:cut] + heard[cut + 1280 :]  # 40 ms, one chunk, lost
    with pytest.raises(AssertionError):
        assert_received_whole(dropped, speech, heard)


def test_sound_where_the_microphone_was_silent_fails() -> None:
    speech = chirp(2.0)
    heard = _padded(_with_gap(speech, 0.6, 0.2))
    noisy = pcm.to_float(heard).copy()
    start = MIC_RATE // 2 + int(0.65 * MIC_RATE)
    noisy[start : start + MIC_RATE // 10] = 0.1 * np.sin(np.arange(MIC_RATE // 10))
    with pytest.raises(AssertionError, match="silence on the microphone"):
        assert_received_whole(pcm.from_float(noisy), speech, heard)
