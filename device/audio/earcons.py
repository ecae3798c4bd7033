"""Short sounds that tell the person at the button what the box is doing.

Generated, not shipped as files: soft sine blips with fades, 24 kHz mono s16le, the
playback format, so they go through the same player as the model's voice.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from device.audio import pcm
from device.live.wire import REPLY_RATE
from device.states import Earcon

RATE = REPLY_RATE  # earcons play into the reply's stream

#: Each earcon's notes, (frequency Hz, length ms), separated by short gaps.
_NOTES: dict[Earcon, list[tuple[float, float]]] = {
    Earcon.LISTEN_START: [(660.0, 70), (880.0, 90)],  # rising: "go ahead"
    Earcon.LISTEN_END: [(880.0, 70), (660.0, 90)],  # falling: "got it"
    Earcon.ERROR: [(330.0, 120), (262.0, 180)],  # low and falling: "something is wrong"
    Earcon.RESTART: [(523.0, 60), (523.0, 60), (659.0, 120)],  # "we had to start afresh"
}
_GAP_MS = 30
_AMPLITUDE = 0.3


@cache
def earcon(name: Earcon) -> bytes:
    """The PCM (24 kHz mono s16le) of an earcon."""
    gap = np.zeros(RATE * _GAP_MS // 1000)
    parts: list[np.ndarray] = []
    for freq, ms in _NOTES[name]:
        parts += [pcm.tone(freq, ms, RATE, amplitude=_AMPLITUDE, fade_ms=10), gap]
    return pcm.from_float(np.concatenate(parts[:-1]))
