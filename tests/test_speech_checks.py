"""The checks the rig tests hold the daemon's audio to (`speech.assert_received_whole`,
`speech.tone_frames`)."""

from __future__ import annotations

import numpy as np
import pytest
from speech import MIC_RATE, SPEAKER_RATE, assert_received_whole, chirp, tone_frames

from device.audio import pcm
from rig.server.voice import reply_audio


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


def test_a_reply_frame_with_a_gap_is_not_taken_for_the_turn_before() -> None:
    """A 660 Hz reply whose next chunk came 13.5 ms late: the 20 ms frame holding the gap
    peaks near 600 Hz in a spectrum, but it is not the 550 Hz reply's (CI saw this)."""
    reply = reply_audio(3, 1.0)
    at = (20 * int(SPEAKER_RATE * 0.02) + 50) * 2  # 50 samples into a frame
    gapped = reply[:at] + bytes(325 * 2) + reply[at:]
    assert tone_frames(gapped, turn=2) == []
    assert len(tone_frames(reply, turn=3)) >= 49
    assert len(tone_frames(reply_audio(2, 1.0), turn=2)) >= 49


@pytest.mark.parametrize("at_s", [0.08, 1.88])
def test_a_gap_near_either_end_of_the_speech_is_carried_too(at_s: float) -> None:
    """A player that ran dry 80 ms from the start (or the end) leaves too little speech
    on one side of its gap for the longest edge to match (CI saw this)."""
    speech = chirp(2.0)
    heard = _padded(_with_gap(speech, at_s, 0.1))
    assert_received_whole(heard[3000:], speech, heard)
    cut = len(bytes(MIC_RATE)) + int(1.0 * MIC_RATE) * 2
    with pytest.raises(AssertionError):
        assert_received_whole(heard[3000:cut] + heard[cut + 1280 :], speech, heard)
