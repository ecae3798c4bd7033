"""The reply synthesiser: a tone per turn that tests can recompute exactly.

Each reply is a sine whose pitch depends on the turn number, so a test (or a
listener at the loopback speaker) can tell replies apart and compare bytes. A
2 ms raised-cosine ramp at both ends gives a sharp onset that measurements can
time precisely, without the click of a step.
"""

from __future__ import annotations

import numpy as np

from device.live.wire import REPLY_RATE as OUTPUT_RATE

BASE_HZ = 440.0
STEP_HZ = 110.0
TURNS_PER_CYCLE = 8
AMPLITUDE = 0.5
RAMP_SECONDS = 0.002


def tone_frequency(turn_index: int) -> float:
    """Pitch of reply ``turn_index`` (1-based): 440 Hz, 550 Hz, ... cycling every 8 turns."""
    return BASE_HZ + STEP_HZ * ((turn_index - 1) % TURNS_PER_CYCLE)


def reply_audio(
    turn_index: int, seconds: float, rate: int = OUTPUT_RATE, voice: bytes | None = None
) -> bytes:
    """Mono s16le PCM of reply ``turn_index``: the exact bytes the server sends.

    With a ``voice`` (s16le at ``rate``), the reply is that recording, repeated or cut
    to ``seconds``, starting at a different place each turn.
    """
    n = round(seconds * rate)
    if voice:
        samples = np.frombuffer(voice, dtype="<i2")
        start = (turn_index - 1) * rate % samples.size
        return np.resize(np.roll(samples, -start), n).astype("<i2").tobytes()
    t = np.arange(n, dtype=np.float64) / rate
    wave = AMPLITUDE * np.sin(2 * np.pi * tone_frequency(turn_index) * t)
    ramp_n = min(round(RAMP_SECONDS * rate), n // 2)
    if ramp_n:
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp_n) / ramp_n)
        wave[:ramp_n] *= ramp
        wave[n - ramp_n:] *= ramp[::-1]
    return (wave * 32767).round().astype("<i2").tobytes()


def chunk_bytes(chunk_seconds: float, rate: int = OUTPUT_RATE) -> int:
    """Size in bytes of one reply chunk (whole samples)."""
    return max(1, round(chunk_seconds * rate)) * 2
