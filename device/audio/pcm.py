"""Small PCM helpers (mono s16le) shared by the adapters, tests, tools and benchmarks."""

from __future__ import annotations

import contextlib
import math
import os
import stat
import wave
from pathlib import Path

import numpy as np

from device.sudo import give_to_sudo_user

FULL_SCALE = 32768.0


def to_float(data: bytes) -> np.ndarray:
    """s16le bytes to float64 samples in [-1, 1)."""
    return np.frombuffer(data, dtype="<i2").astype(np.float64) / FULL_SCALE


def from_float(samples: np.ndarray) -> bytes:
    """Float samples (clipped to [-1, 1]) to s16le bytes."""
    scaled = np.clip(np.asarray(samples, dtype=np.float64), -1.0, 1.0) * (FULL_SCALE - 1)
    return np.round(scaled).astype("<i2").tobytes()


def duration_ms(data: bytes, rate: int) -> float:
    return len(data) / 2 / rate * 1000


def write_wav(path: str | Path, data: bytes, rate: int, *, private: bool = False) -> None:
    """Mono s16le PCM as a WAV file anyone can play (replies, questions, recordings).

    Written beside `path`, then renamed over it: a card that fills up mid-write leaves
    the earlier file whole and no half file (written in place, the earlier one was cut
    to nothing first). A device or a link there (/dev/null), or a directory where only
    the file is ours, is written in place as before (`_write_in_place`). `private`: what
    the box said to an owner (`ask --audio`) is theirs alone, mode 0600, and under sudo
    theirs, not root's, in place too: in a shared /tmp it was any local user's to play.
    """
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        _write_in_place(path, data, rate, private)
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        with contextlib.suppress(FileNotFoundError):  # left by a power cut: pids start afresh
            tmp.unlink()
        fd = os.open(tmp, flags, 0o600 if private else 0o666)
    except PermissionError:  # a file of ours in a directory that is not: in place
        _write_in_place(path, data, rate, private)
        return
    try:
        if private:
            give_to_sudo_user(fd)
        else:
            with contextlib.suppress(FileNotFoundError):  # the earlier file's permissions kept
                os.fchmod(fd, stat.S_IMODE(path.stat().st_mode))
        _write_wav_to(fd, data, rate)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _write_in_place(path: Path, data: bytes, rate: int, private: bool) -> None:
    """The WAV written into what is at `path`, through a link. `private`: a file it ends up
    in is made as a renamed one is, 0600 and the sudo user's (through a link under sudo it
    was root's and 0644, any local user's to play); a device or a pipe is left as it is.
    A file system that keeps no modes or owners (FAT) keeps the mount's."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600 if private else 0o666)
    try:
        if private and stat.S_ISREG(os.fstat(fd).st_mode):
            with contextlib.suppress(PermissionError):  # not ours to change, or FAT's
                os.fchmod(fd, 0o600)
            give_to_sudo_user(fd)
    except BaseException:
        os.close(fd)
        raise
    _write_wav_to(fd, data, rate)


def _write_wav_to(target: str | int, data: bytes, rate: int) -> None:
    """The WAV into a path, or into a file descriptor (closed after)."""
    with open(target, "wb") as file, wave.open(file, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(data)


def db_to_amplitude(dbfs: float) -> float:
    return float(10 ** (dbfs / 20))


def _dbfs(value: float) -> float:
    return float(20 * np.log10(value)) if value > 0 else float("-inf")


def frame_dbfs(samples: np.ndarray, frame: int, *, centred: bool = False) -> np.ndarray:
    """The loudness of each whole frame of `frame` samples (a remainder shorter than a
    frame is left out); `samples` as int16 or as float in [-1, 1]; `centred`: each frame
    about its own mean, so that a DC offset does not pass for sound. The one measure the
    rig and the tests judge speech by, frame by frame."""
    scale = FULL_SCALE if samples.dtype == np.int16 else 1.0
    whole = samples.size - samples.size % frame
    x = samples[:whole].astype(np.float64).reshape(-1, frame) / scale
    if centred:
        x = x - x.mean(axis=1, keepdims=True)
    return 20 * np.log10(np.sqrt(np.mean(x**2, axis=1)) + 1e-9)


def rms(data: bytes) -> float:
    """The root mean square of a buffer's samples, 0..1; 0 for no samples.

    In single precision and one dot product: the microphone's every chunk is measured,
    and this is five times quicker than in float64 samples.
    """
    samples = np.frombuffer(data, dtype="<i2").astype(np.float32)
    return math.sqrt(float(samples @ samples) / samples.size) / FULL_SCALE if samples.size else 0.0


def rms_dbfs(data: bytes) -> float:
    """Loudness of a whole buffer; -inf for digital silence or no samples."""
    return _dbfs(rms(data))


def peak_dbfs(data: bytes) -> float:
    samples = to_float(data)
    return _dbfs(float(np.max(np.abs(samples)))) if samples.size else float("-inf")


def tone(
    freq: float, ms: float, rate: int, amplitude: float = 0.5, fade_ms: float = 5.0
) -> np.ndarray:
    """A sine as float samples, with raised-cosine fades so it starts and ends softly."""
    n = int(rate * ms / 1000)
    samples = amplitude * np.sin(2 * np.pi * freq * np.arange(n) / rate)
    fade = min(int(rate * fade_ms / 1000), n // 2)
    if fade:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, fade))
        samples[:fade] *= ramp
        samples[n - fade :] *= ramp[::-1]
    return samples


def dominant_frequency(data: bytes, rate: int) -> float:
    """The strongest frequency in the buffer (Hann-windowed FFT peak)."""
    samples = to_float(data)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.argmax(spectrum) * rate / samples.size)


def tone_share(data: bytes, rate: int, freq: float) -> float:
    """How much of the buffer's energy one sine at `freq` carries (0..1, by least squares).

    Unlike the spectrum's peak, a stretch that only partly holds the tone (a gap in
    the playback, the edge of a reply) reads low, so it is not taken for another pitch.
    """
    samples = to_float(data)
    energy = float(np.dot(samples, samples))
    if not energy:
        return 0.0
    t = 2 * np.pi * freq * np.arange(samples.size) / rate
    basis = np.stack([np.sin(t), np.cos(t)], axis=1)
    fit, *_ = np.linalg.lstsq(basis, samples, rcond=None)
    return float(np.sum((basis @ fit) ** 2) / energy)


def find_offset(haystack: np.ndarray, needle: np.ndarray) -> tuple[int, float]:
    """Where ``needle`` best matches inside ``haystack``: (sample offset, correlation).

    Normalised cross-correlation by FFT; the score is 1.0 for an exact copy and near 0
    where the needle does not occur.
    """
    if needle.size == 0 or needle.size > haystack.size:
        raise ValueError("needle must be non-empty and no longer than haystack")
    n = haystack.size + needle.size
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(haystack, size) * np.conj(np.fft.rfft(needle, size)), size)
    corr = corr[: haystack.size - needle.size + 1]
    energy = np.cumsum(np.concatenate([[0.0], haystack**2]))
    window = energy[needle.size :] - energy[: -needle.size]
    norm = np.sqrt(np.maximum(window, 1e-12) * float(np.sum(needle**2)))
    score = corr / norm
    offset = int(np.argmax(score))
    return offset, float(score[offset])


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised correlation of two aligned stretches of the same length: 1.0 for a copy
    at any level, near 0 for unrelated sound (and for silence)."""
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
