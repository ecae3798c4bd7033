"""Words for the rig to say: espeak-ng's voice, at the rate and loudness a test wants.

The demo asks its question with it, the echo tests and the benchmark make the
box's replies and the person who talks over them.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import wave

import numpy as np
import soxr

from device.audio import pcm
from device.live.wire import MIC_RATE


def speak(text: str, rate: int = MIC_RATE) -> bytes:
    """The text spoken by espeak-ng as mono s16le at `rate`."""
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is missing; run scripts/setup")
    wav = subprocess.run(["espeak-ng", "--stdout", text], capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        source_rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    return soxr.resample(samples, source_rate, rate).astype(np.int16).tobytes()


def said(text: str, dbfs: float, rate: int = MIC_RATE) -> np.ndarray:
    """`text` spoken, as float samples whose voiced part has RMS `dbfs`: how loud a
    person (or the box) is, whatever espeak-ng's own level."""
    samples = pcm.to_float(speak(text, rate))
    voiced = samples[np.abs(samples) > 1e-3]
    return samples * pcm.db_to_amplitude(dbfs) / np.sqrt(np.mean(voiced**2))
