"""A blocking PortAudio output stream, through PortAudio's own C API.

The speaker writes into an idle device (its first samples play at once, with no
buffer of silence ahead of them, which a callback stream always starts with) and
drops what it holds at a barge-in. PyAudio's blocking stream cannot do either
honestly: it has no abort, and a write that reports an output underflow either
hides it or closes the stream. python-sounddevice has both, but initialises
PortAudio when imported and so freezes the device list the audio keeper relies
on to find a USB card that comes back under another number. These few calls go
to the same libportaudio that PyAudio loads, on a device PyAudio chose.
"""

from __future__ import annotations

import ctypes
import ctypes.util

PA_INT16 = 0x00000008
PA_CLIP_OFF = 0x00000001
PA_OUTPUT_UNDERFLOWED = -9980
PA_BAD_STREAM_PTR = -9988


class PortAudioError(OSError):
    """A PortAudio call failed; `errno` is PortAudio's error code."""


class _StreamParameters(ctypes.Structure):
    _fields_ = [
        ("device", ctypes.c_int),
        ("channelCount", ctypes.c_int),
        ("sampleFormat", ctypes.c_ulong),
        ("suggestedLatency", ctypes.c_double),
        ("hostApiSpecificStreamInfo", ctypes.c_void_p),
    ]


class _StreamInfo(ctypes.Structure):
    _fields_ = [
        ("structVersion", ctypes.c_int),
        ("inputLatency", ctypes.c_double),
        ("outputLatency", ctypes.c_double),
        ("sampleRate", ctypes.c_double),
    ]


def _library() -> ctypes.CDLL:
    """libportaudio, loaded (once) when the first stream opens, never at import."""
    global _lib
    if _lib is None:
        lib = ctypes.CDLL(ctypes.util.find_library("portaudio") or "libportaudio.so.2")
        stream = ctypes.c_void_p
        for name in ("Pa_StartStream", "Pa_StopStream", "Pa_AbortStream", "Pa_CloseStream",
                     "Pa_IsStreamActive"):
            getattr(lib, name).argtypes = [stream]
            getattr(lib, name).restype = ctypes.c_int
        lib.Pa_Initialize.restype = lib.Pa_Terminate.restype = ctypes.c_int
        lib.Pa_OpenStream.argtypes = [
            ctypes.POINTER(stream), ctypes.POINTER(_StreamParameters),
            ctypes.POINTER(_StreamParameters), ctypes.c_double, ctypes.c_ulong, ctypes.c_ulong,
            ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.Pa_OpenStream.restype = ctypes.c_int
        lib.Pa_WriteStream.argtypes = [stream, ctypes.c_char_p, ctypes.c_ulong]
        lib.Pa_WriteStream.restype = ctypes.c_int
        lib.Pa_GetStreamInfo.argtypes = [stream]
        lib.Pa_GetStreamInfo.restype = ctypes.POINTER(_StreamInfo)
        lib.Pa_GetErrorText.argtypes = [ctypes.c_int]
        lib.Pa_GetErrorText.restype = ctypes.c_char_p
        _lib = lib
    return _lib


_lib: ctypes.CDLL | None = None


def _check(code: int) -> int:
    if code < 0:
        raise PortAudioError(code, _library().Pa_GetErrorText(code).decode(errors="replace"))
    return code


class OutputStream:
    """16-bit output to one device in PortAudio's blocking mode.

    Every call may block for a while (PortAudio talks to the device): call them from
    one worker thread. The stream holds its own
    reference to PortAudio (Pa_Initialize counts) until `close()`.
    """

    def __init__(
        self, device: int, rate: int, channels: int, period_frames: int, latency_s: float
    ) -> None:
        lib = _library()
        _check(lib.Pa_Initialize())
        params = _StreamParameters(device, channels, PA_INT16, latency_s, None)
        self._stream = ctypes.c_void_p()
        try:
            _check(lib.Pa_OpenStream(ctypes.byref(self._stream), None, ctypes.byref(params),
                                     rate, period_frames, PA_CLIP_OFF, None, None))
        except BaseException:
            lib.Pa_Terminate()
            raise
        self.frame_bytes = 2 * channels
        # NULL for a stream PortAudio no longer knows: closed here (left open, it held the
        # card) and said as the OSError the audio keeper tries again on.
        info = lib.Pa_GetStreamInfo(self._stream)
        if not info:
            self.close()
            raise PortAudioError(PA_BAD_STREAM_PTR, "PortAudio has no information on the stream")
        self.output_latency = info.contents.outputLatency

    def start(self) -> None:
        """Ready the device; the first write starts it with that audio at its head."""
        _check(_library().Pa_StartStream(self._stream))

    def write(self, frames: bytes) -> bool:
        """Write whole frames (blocks while the device is full); True if the device ran
        out of audio since the last write (PortAudio's output underflow)."""
        code = _library().Pa_WriteStream(self._stream, frames, len(frames) // self.frame_bytes)
        if code == PA_OUTPUT_UNDERFLOWED:
            return True
        _check(code)
        return False

    def stop(self) -> None:
        """Stop once what was written has played."""
        _check(_library().Pa_StopStream(self._stream))

    def abort(self) -> None:
        """Stop at once, dropping what the device still held."""
        _check(_library().Pa_AbortStream(self._stream))

    def is_active(self) -> bool:
        return _check(_library().Pa_IsStreamActive(self._stream)) == 1

    def close(self) -> None:
        """Close (dropping what is unplayed) and let go of PortAudio."""
        lib = _library()
        try:
            _check(lib.Pa_CloseStream(self._stream))
        finally:
            lib.Pa_Terminate()
