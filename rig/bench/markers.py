"""A marker sound to play into the microphone, and where (and how much of) it arrived.

The marker is band-limited noise: its autocorrelation has one sharp peak, so
cross-correlation places it to the sample, and every 10 ms of it differs from
every other, so each window can be checked on its own. The band (300-3000 Hz)
passes the loopback's resamplers untouched.
"""

from __future__ import annotations

import numpy as np

from device.audio import pcm

WINDOW_MS = 10
MATCH = 0.9  # a window of the marker "arrived" when it correlates at least this well


def marker(seconds: float, rate: int, level: float = 0.5, seed: int = 10) -> np.ndarray:
    """`seconds` of noise between 300 and 3000 Hz, peaking at `level`, as float samples."""
    n = round(seconds * rate)
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    spectrum[(freqs < 300) | (freqs > 3000)] = 0
    noise = np.fft.irfft(spectrum, n)
    return noise * (level / np.max(np.abs(noise)))


def locate(haystack: np.ndarray, needle: np.ndarray) -> int:
    """Where `needle`'s first sample falls in `haystack`, by cross-correlation of the whole.

    The result may be negative, or run past the end, when only part of the needle
    is there: the haystack is padded with silence on both sides before the search.
    """
    pad = np.zeros(needle.size)
    offset, _ = pcm.find_offset(np.concatenate([pad, haystack, pad]), needle)
    return offset - needle.size


def missing_ms(received: np.ndarray, sent: np.ndarray, rate: int) -> tuple[float, list[int]]:
    """Milliseconds of `sent` that are not in `received`, and which windows (in ms) they are.

    `sent` is aligned as a whole; then each 10 ms window counts as missing when it
    falls outside `received` or correlates below 0.9 with what is there.
    """
    window = rate * WINDOW_MS // 1000
    start = locate(received, sent)
    missing = []
    for begin in range(0, sent.size - window + 1, window):
        want = sent[begin : begin + window]
        at = start + begin
        got = received[at : at + window] if at >= 0 else np.zeros(0)
        if got.size < window or pcm.similarity(want, got) < MATCH:
            missing.append(begin * 1000 // rate)
    return float(len(missing) * WINDOW_MS), missing

