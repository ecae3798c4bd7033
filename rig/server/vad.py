"""An energy detector: the local stand-in for the service's voice activity detection.

It looks at 20 ms frames of 16 kHz s16le audio; a frame whose RMS exceeds the
threshold is speech. Speech starts at the first loud frame and ends once
``silence_ms`` of quiet frames follow. Deterministic, so tests that feed a tone
and then silence know exactly when the turn ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from device.live.wire import MIC_RATE as INPUT_RATE

FRAME_MS = 20
DEFAULT_SILENCE_MS = 500
DEFAULT_THRESHOLD = 500.0
# Sensitivity names from the Live API's realtimeInputConfig, mapped to RMS thresholds.
THRESHOLDS = {
    "START_SENSITIVITY_HIGH": 250.0,
    "START_SENSITIVITY_LOW": 1000.0,
}


def threshold_for(sensitivity: str | None) -> float:
    """RMS threshold for a start-of-speech sensitivity name (default when unknown)."""
    return THRESHOLDS.get(sensitivity or "", DEFAULT_THRESHOLD)


def threshold_dbfs(sensitivity: str | None) -> float:
    """The same threshold as a 16-bit frame's level in dBFS."""
    return 20 * math.log10(threshold_for(sensitivity) / 32768)


@dataclass
class EnergyDetector:
    """Feed PCM, get 'start'/'end' events; ``speech_ms`` is the length of the last speech."""

    threshold: float = DEFAULT_THRESHOLD
    silence_ms: int = DEFAULT_SILENCE_MS
    speaking: bool = False
    speech_ms: int = 0
    _quiet_ms: int = 0
    _pending: bytes = field(default=b"", repr=False)

    def feed(self, pcm: bytes) -> list[str]:
        """Consume audio; return the events it caused, in order."""
        frame_bytes = INPUT_RATE * FRAME_MS // 1000 * 2
        data = self._pending + pcm
        whole = len(data) - len(data) % frame_bytes
        self._pending = data[whole:]
        events: list[str] = []
        if not whole:
            return events
        frames = np.frombuffer(data[:whole], dtype="<i2").astype(np.float64)
        rms = np.sqrt(np.mean(frames.reshape(-1, frame_bytes // 2) ** 2, axis=1))
        for loud in rms > self.threshold:
            events.extend(self._step(bool(loud)))
        return events

    def _step(self, loud: bool) -> list[str]:
        if loud:
            events = [] if self.speaking else ["start"]
            if not self.speaking:
                self.speaking, self.speech_ms, self._quiet_ms = True, 0, 0
            self.speech_ms += self._quiet_ms + FRAME_MS
            self._quiet_ms = 0
            return events
        if self.speaking:
            self._quiet_ms += FRAME_MS
            if self._quiet_ms >= self.silence_ms:
                self.speaking, self._quiet_ms = False, 0
                return ["end"]
        return []

    def reset(self) -> None:
        """Forget any speech in progress (after the turn was ended another way)."""
        self.speaking, self._quiet_ms = False, 0
