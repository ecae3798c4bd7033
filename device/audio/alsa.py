"""A capture device read through ALSA itself: libasound's PCM calls, by ctypes.

Why not PortAudio, which plays the speaker: its capture either calls into Python
every period, idle or not (a callback stream: most of an idle box's CPU), or reads
a blocking stream that cannot be closed once its card has gone (its abort fails
on the vanished device and the close never happens; the kernel then waits for
ever to free the card). Here the device is non-blocking: the reader decides when
to wake (twice a second between turns), `snd_pcm_close` always closes, and
a vanished card is an error from the next read.

Why not pyalsaaudio: PyPI has it only as source (a compiler on every Pi), and
Debian's python3-alsaaudio is 0.8.4, without `polldescriptors_revents()` (0.11
added it, in 2025), which a plugin device such as PulseAudio's needs to be polled
right. The calls needed are a dozen; they are here, checked.
"""

from __future__ import annotations

import ctypes
import errno
import re
import select
from dataclasses import dataclass
from functools import cache

SND_PCM_STREAM_CAPTURE = 1
SND_PCM_NONBLOCK = 1
SND_PCM_ACCESS_RW_INTERLEAVED = 3
SND_PCM_STATE_PREPARED = 2


@dataclass(frozen=True)
class SampleFormat:
    """A little-endian sample format ALSA may record in: `width` bytes a sample, of which
    the two at `top` are its 16 most significant bits (what the box keeps)."""

    name: str
    code: int
    width: int
    top: int


S16_LE = SampleFormat("s16le", 2, 2, 0)
#: What a capture device is asked for, in this order: the box sends 16-bit samples, but a
#: card without them (an I2S MEMS microphone records 32-bit ones only, a USB studio
#: microphone 24-bit ones in three bytes) is read in its own and cut down to 16 here.
FORMATS = (
    S16_LE,
    SampleFormat("s32le", 10, 4, 2),
    SampleFormat("s24le", 6, 4, 1),  # 24 bits in the low three bytes of four
    SampleFormat("s24_3le", 32, 3, 1),
)
#: PortAudio names a card's device "<card>: <device> (hw:C,D)" and opens it as hw:C,D;
#: every other name it lists (default, pulse, dmix...) is an ALSA device name itself.
_HW_NAME = re.compile(r"\s*\(hw:(\d+),(\d+)\)$")


class AlsaError(OSError):
    """A libasound call failed; `errno` is its error (ENODEV: the card has gone)."""


class _PollFd(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_int), ("events", ctypes.c_short), ("revents", ctypes.c_short)]


@cache
def _lib() -> ctypes.CDLL:
    lib = ctypes.CDLL("libasound.so.2")
    lib.snd_strerror.restype = ctypes.c_char_p
    lib.snd_pcm_readi.restype = ctypes.c_long
    lib.snd_pcm_readi.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_ulong]
    lib.snd_pcm_avail_update.restype = ctypes.c_long
    lib.snd_pcm_avail_update.argtypes = [ctypes.c_void_p]
    return lib


def _check(result: int, what: str) -> int:
    if result < 0:
        message = _lib().snd_strerror(result).decode(errors="replace")
        raise AlsaError(-result, f"{what}: {message}")
    return result


def card_device(portaudio_name: str) -> tuple[int, int] | None:
    """The card and device numbers of a card's device PortAudio lists as `portaudio_name`;
    None for a name that is an ALSA device name itself."""
    found = _HW_NAME.search(portaudio_name)
    return (int(found[1]), int(found[2])) if found else None


def alsa_name(portaudio_name: str) -> str:
    """The ALSA device name under which PortAudio lists a device as `portaudio_name`."""
    numbers = card_device(portaudio_name)
    return f"hw:{numbers[0]},{numbers[1]}" if numbers else portaudio_name


def without_numbers(portaudio_name: str) -> str:
    """The name without its "(hw:C,D)": what stays when the card comes back under
    another number."""
    return _HW_NAME.sub("", portaudio_name)


def to_s16(raw: bytes, fmt: SampleFormat) -> bytes:
    """Samples in `fmt` as s16le: each one's 16 most significant bits."""
    if fmt == S16_LE:
        return raw
    out = bytearray(len(raw) // fmt.width * 2)
    out[0::2] = raw[fmt.top :: fmt.width]
    out[1::2] = raw[fmt.top + 1 :: fmt.width]
    return bytes(out)


class CapturePcm:
    """One ALSA capture device, open non-blocking, interleaved; read as s16le.

    Not thread-safe: one thread reads it, and closes it once that thread is done.
    """

    def __init__(
        self, name: str, rate: int, channels: int, period_frames: int, buffer_frames: int
    ) -> None:
        """Opens and configures the device (raises AlsaError); start() starts it."""
        self.name = name
        self.rate = rate
        self.channels = channels
        self.format = S16_LE
        self._pcm = ctypes.c_void_p()
        lib = _lib()
        _check(
            lib.snd_pcm_open(
                ctypes.byref(self._pcm), name.encode(), SND_PCM_STREAM_CAPTURE, SND_PCM_NONBLOCK
            ),
            f"cannot open {name!r}",
        )
        try:
            self.period_frames, self.buffer_frames = self._configure(period_frames, buffer_frames)
            self._frame_bytes = self.format.width * channels
            self._buffer = ctypes.create_string_buffer(self.buffer_frames * self._frame_bytes)
            self._fds = self._poll_descriptors()
            self._revents = ctypes.c_ushort()
        except BaseException:
            self.close()
            raise

    def _configure(self, period_frames: int, buffer_frames: int) -> tuple[int, int]:
        lib, pcm = _lib(), self._pcm
        hw = ctypes.c_void_p()
        _check(lib.snd_pcm_hw_params_malloc(ctypes.byref(hw)), "hw_params")
        try:
            _check(lib.snd_pcm_hw_params_any(pcm, hw), "no configuration")
            _check(
                lib.snd_pcm_hw_params_set_access(pcm, hw, SND_PCM_ACCESS_RW_INTERLEAVED),
                "interleaved access",
            )
            _check(lib.snd_pcm_hw_params_set_channels(pcm, hw, self.channels), "channels")
            _check(lib.snd_pcm_hw_params_set_rate(pcm, hw, self.rate, 0), f"{self.rate} Hz")
            # Chosen last: a USB card's formats may differ from one rate to another.
            self.format = self._choose_format(hw)
            _check(lib.snd_pcm_hw_params_set_format(pcm, hw, self.format.code), self.format.name)
            period = ctypes.c_ulong(period_frames)
            _check(
                lib.snd_pcm_hw_params_set_period_size_near(pcm, hw, ctypes.byref(period), None),
                "period",
            )
            buffer = ctypes.c_ulong(max(buffer_frames, 2 * period.value))
            _check(
                lib.snd_pcm_hw_params_set_buffer_size_near(pcm, hw, ctypes.byref(buffer)),
                "buffer",
            )
            _check(lib.snd_pcm_hw_params(pcm, hw), "cannot apply the format")
        finally:
            lib.snd_pcm_hw_params_free(hw)
        return period.value, buffer.value

    def _choose_format(self, hw: ctypes.c_void_p) -> SampleFormat:
        """The first of FORMATS the device records in at its channels and rate; s16le, to be
        refused, if none."""
        test = _lib().snd_pcm_hw_params_test_format
        return next((f for f in FORMATS if test(self._pcm, hw, f.code) == 0), S16_LE)

    def _poll_descriptors(self) -> ctypes.Array[_PollFd]:
        lib = _lib()
        count = _check(lib.snd_pcm_poll_descriptors_count(self._pcm), "poll descriptors")
        fds = (_PollFd * count)()
        _check(lib.snd_pcm_poll_descriptors(self._pcm, fds, count), "poll descriptors")
        return fds

    def register(self, poller: select.poll) -> None:
        """Let `poller` wake when the device has something (or has failed)."""
        for fd in self._fds:
            poller.register(fd.fd, fd.events)

    def acknowledge(self, events: list[tuple[int, int]]) -> None:
        """Hand the device what poll() said of its descriptors: a plugin (PulseAudio's)
        learns from it that it was heard, and stops waking the poller."""
        fds = self._fds
        for fd in fds:
            fd.revents = 0
        for number, happened in events:
            for fd in fds:
                if fd.fd == number:
                    fd.revents = happened
        _check(
            _lib().snd_pcm_poll_descriptors_revents(
                self._pcm, fds, len(fds), ctypes.byref(self._revents)
            ),
            "poll",
        )

    def start(self) -> None:
        _check(_lib().snd_pcm_start(self._pcm), "cannot start")

    def read(self) -> tuple[bytes, int]:
        """Everything the device holds (s16le), and how many frames it had left (read after it).

        Raises AlsaError with EPIPE when the buffer overran (recover() then goes on)."""
        lib = _lib()
        got = lib.snd_pcm_readi(self._pcm, self._buffer, self.buffer_frames)
        if got == -errno.EAGAIN:
            return b"", 0
        _check(got, "read")
        # Less than a whole buffer read: it held no more (a full one may have more behind).
        left = 0 if got < self.buffer_frames else max(lib.snd_pcm_avail_update(self._pcm), 0)
        return to_s16(ctypes.string_at(self._buffer, got * self._frame_bytes), self.format), left

    def recover(self, error: AlsaError) -> None:
        """Start again after an overrun (or a suspend); other errors are raised again."""
        lib = _lib()
        _check(lib.snd_pcm_recover(self._pcm, -(error.errno or errno.EIO), 1), "cannot recover")
        if lib.snd_pcm_state(self._pcm) == SND_PCM_STATE_PREPARED:  # not resumed running
            self.start()

    def close(self) -> None:
        """Close the device; always lets go of it, a vanished card included."""
        pcm, self._pcm = self._pcm, ctypes.c_void_p()
        if pcm:
            _lib().snd_pcm_close(pcm)
