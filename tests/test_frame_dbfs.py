"""The one frame-by-frame loudness the rig and the tests judge speech by."""

from __future__ import annotations

import numpy as np
import pytest

from device.audio import pcm

RATE = 16000
FRAME = RATE // 100


def test_each_whole_frame_s_level_the_same_in_int16_and_in_float() -> None:
    t = np.arange(RATE // 4 + FRAME // 2) / RATE  # a quarter second and half a frame
    tone = 0.5 * np.sin(2 * np.pi * 1000 * t)  # -6 dBFS peak: -9 dBFS in rms
    as_int16 = np.round(tone * 32767).astype(np.int16)
    levels = pcm.frame_dbfs(tone, FRAME)
    assert levels.size == 25  # the half frame left out
    assert levels == pytest.approx(np.full(25, -9.03), abs=0.01)
    assert pcm.frame_dbfs(as_int16, FRAME) == pytest.approx(levels, abs=0.01)


def test_centred_a_dc_offset_is_not_taken_for_sound() -> None:
    offset = np.full(4 * FRAME, 0.25)
    assert pcm.frame_dbfs(offset, FRAME) == pytest.approx(np.full(4, -12.04), abs=0.01)
    assert (pcm.frame_dbfs(offset, FRAME, centred=True) < -150).all()


def test_the_benchmarks_and_the_taps_frames_are_the_detectors_and_the_modules() -> None:
    """The hands-free benchmark judges words by the server's 20 ms frames, the echo tap
    by the canceller's 10 ms ones: each as many levels as whole frames."""
    from rig import echo_tap
    from rig.bench import hands_free

    tone = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(RATE) / RATE)
    assert hands_free.frames_dbfs(tone) == pytest.approx(np.full(50, -9.03), abs=0.01)
    as_int16 = np.round(tone * 32767).astype(np.int16)
    call = echo_tap.Call(kind=echo_tap.SENT, t=1.0, arrays=(as_int16,) * 3)
    levels = echo_tap.frames([call], 0.0, 1.0)
    assert len(levels) == 100
    each = np.array([(f.mic, f.module, f.sent) for f in levels])
    assert each == pytest.approx(np.full((100, 3), -9.03), abs=0.01)
