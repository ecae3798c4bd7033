"""Short sounds that tell the person at the button what the box is doing.

Generated, not shipped as files: soft sine blips with fades, 24 kHz mono s16le, the
playback format, so they go through the same player as the model's voice.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from device.audio import pcm
from device.live.wire import REPLY_RATE

RATE = REPLY_RATE  # earcons play into the reply's stream

# name -> (frequency Hz, length ms) notes, separated by short gaps
_NOTES: dict[str, list[tuple[float, float]]] = {
    "listen_start": [(660.0, 70), (880.0, 90)],  # rising: "go ahead"
    "listen_end": [(880.0, 70), (660.0, 90)],  # falling: "got it"
    "error": [(330.0, 120), (262.0, 180)],  # low and falling: "something is wrong"
    "restart": [(523.0, 60), (523.0, 60), (659.0, 120)],  # "we had to start afresh"
}
_GAP_MS = 30
_AMPLITUDE = 0.3


def names() -> list[str]:
    return list(_NOTES)


@cache
def earcon(name: str) -> bytes:
    """The PCM (24 kHz mono s16le) for an earcon name; KeyError lists the names."""
    if name not in _NOTES:
        raise KeyError(f"unknown earcon {name!r}; known: {', '.join(_NOTES)}")
    gap = np.zeros(RATE * _GAP_MS // 1000)
    parts: list[np.ndarray] = []
    for freq, ms in _NOTES[name]:
        parts += [pcm.tone(freq, ms, RATE, amplitude=_AMPLITUDE, fade_ms=10), gap]
    return pcm.from_float(np.concatenate(parts[:-1]))
