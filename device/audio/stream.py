"""One PortAudio stream's life: the speaker's (the microphone reads ALSA itself).

Opening and closing happen under one lock (Pa_Initialize and opening streams
are not thread-safe, and the appliance reopens devices from worker threads); the
microphone takes it too while PortAudio lists the devices. Each call into the
stream is stamped, so the audio keeper can tell a live stream from one whose
device vanished.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import pyaudio

from device.audio.devices import (
    DeviceInfo,
    DeviceSpec,
    Direction,
    choose_format,
    found_again,
)
from device.audio.portaudio import open_portaudio

log = logging.getLogger(__name__)

PORTAUDIO_LOCK = threading.Lock()
PR_SET_NAME = 15
Args = ParamSpec("Args")
Result = TypeVar("Result")


def name_thread(name: str) -> None:
    """Give the calling thread a name the kernel shows (`top -H`, /proc/PID/task/*/comm),
    so that an owner, and the benchmark, can see which part of the box uses the CPU."""
    _process_symbols().prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


@functools.cache
def _process_symbols() -> ctypes.CDLL:
    """The symbols already loaded (libc's among them), without looking for a library:
    `ctypes.util.find_library` runs `ldconfig -p` in a new process, 1.5 ms here and
    many times that on a Pi, and a speaker names its thread as each reply starts."""
    return ctypes.CDLL(None, use_errno=True)


class PortAudioStream:
    """Opens nothing until start(); subclasses say how to open their stream in `_open`."""

    THREAD = "audio"  # the name of the thread that serves the stream

    def __init__(
        self, device: DeviceSpec, rate: int | None = None, channels: int | None = None
    ) -> None:
        """`rate` and `channels` force a format (tests); by default the device's best fit."""
        self._find = device  # the spec; once an index opened, that device's name (a reopen)
        self.device_name = ""
        self.device_rate: int | None = None  # the rate the device really runs at
        self.channels = 1  # the channels it really runs with (the stream converts to mono)
        self._forced = (rate, channels)
        self._pa: pyaudio.PyAudio | None = None
        self._stream: pyaudio.Stream | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_call: float | None = None
        self._in_call: str | None = None  # the PortAudio call its thread is in, by name

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Open the device; callbacks reach `loop` (default: the running one).

        Blocks for as long as PortAudio takes to open the device: call it from the
        loop's thread at start-up, or from a worker thread with the loop given.
        """
        if self._stream is not None:
            return
        self._loop = loop or asyncio.get_running_loop()
        with PORTAUDIO_LOCK:
            self._pa = open_portaudio()
            try:
                self._stream = self._open(self._pa)
            except BaseException:
                self._close()
                raise
            self._restarted()
        try:
            self._started()
        except BaseException:  # its thread cannot start (TasksMax): closed, for the next try
            self.close_stream()
            raise

    def close_stream(self) -> None:
        """Close the device (PortAudio only: safe from a worker thread)."""
        with PORTAUDIO_LOCK:
            self._close()

    def stop(self) -> None:
        """Stop and close the device; whatever it still held is dropped (on the loop)."""
        self.close_stream()

    def _close(self) -> None:
        """Let go of the stream and of PortAudio, even when a vanished device complains."""
        stream, self._stream = self._stream, None
        pa, self._pa = self._pa, None
        try:
            if stream is not None:
                self._release(stream)
        finally:
            if pa is not None:
                pa.terminate()

    def _release(self, stream: pyaudio.Stream) -> None:
        """Stop and close the stream (a subclass with another kind of stream says how)."""
        try:
            stream.stop_stream()
        finally:
            stream.close()

    def _open(self, pa: pyaudio.PyAudio) -> pyaudio.Stream:
        raise NotImplementedError

    def _choose(self, pa: pyaudio.PyAudio, direction: Direction, wanted_rate: int) -> DeviceInfo:
        """The configured device and the format to run it in."""
        info, fmt = choose_format(pa, self._find, direction, wanted_rate, self._forced)
        self._find = found_again(pa, self._find, info, direction)
        self.device_name, self.device_rate, self.channels = str(info), fmt.rate, fmt.channels
        return info

    def _started(self) -> None:
        """Say in the journal what was opened."""

    def _restarted(self) -> None:
        """The stream runs again after a pause: judge it as one just opened."""
        self._last_call = None

    def _portaudio(
        self, method: Callable[Args, Result], *args: Args.args, **kwargs: Args.kwargs
    ) -> Result:
        """Call the stream's `method` (on the stream's own thread), stamped: the keeper
        tells a live stream from one whose device vanished, and names a call that never
        returns in the journal when it gives the device up.

        The first one since the stream (re)started names that thread for the kernel
        (`THREAD`), so that `top -H` shows which part of the box uses the CPU.
        """
        if self._last_call is None:
            name_thread(self.THREAD)
        self._in_call, self._last_call = method.__name__, time.monotonic()
        try:
            return method(*args, **kwargs)
        finally:
            self._in_call = None

    @property
    def running(self) -> bool:
        stream = self._stream  # read once: a keeper's worker may close it meanwhile
        return stream is not None and stream.is_active()
