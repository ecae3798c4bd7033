"""Microphone capture: fixed-size 16 kHz chunks handed from PortAudio to the loop.

The PortAudio callback runs on its own thread. It only converts (resamples when the
device cannot record at 16 kHz), cuts exact chunks and schedules ``on_chunk`` on the
event loop with ``call_soon_threadsafe``; it never waits for the loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

import numpy as np
import pyaudio
import soxr

from device.audio.devices import DeviceSpec, choose_device, pick_rate

log = logging.getLogger(__name__)

RATE = 16000  # what the Live API takes
ChunkHandler = Callable[[bytes, float], None]

#: Pa_Initialize, opening and closing streams are not thread-safe; the appliance
#: reopens devices from worker threads, so every open and close holds this lock.
PORTAUDIO_LOCK = threading.Lock()


class Capture:
    """Records mono s16le and delivers ``chunk_ms`` chunks at 16 kHz to ``on_chunk``.

    ``on_chunk(pcm, t)`` runs on the event loop; ``t`` is the ``time.monotonic()``
    when the chunk's last sample reached this process. Opens nothing until start().
    """

    def __init__(
        self,
        on_chunk: ChunkHandler,
        *,
        device: DeviceSpec = None,
        chunk_ms: int = 20,
        device_rate: int | None = None,
        on_overflow: Callable[[int], None] | None = None,
    ) -> None:
        self.on_chunk = on_chunk
        self.device_spec = device
        self.chunk_ms = chunk_ms
        self.chunk_bytes = RATE * chunk_ms // 1000 * 2
        self.forced_rate = device_rate
        self.on_overflow = on_overflow
        self.overflows = 0
        self.last_callback = 0.0  # time.monotonic() of PortAudio's latest call
        self.device_rate: int | None = None  # the rate the device really runs at
        self._pa: pyaudio.PyAudio | None = None
        self._stream: pyaudio.Stream | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._resampler: soxr.ResampleStream | None = None
        self._pending = bytearray()
        self.device_name = ""

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Open the device and start recording; chunks go to `loop` (default: the running one).

        Blocks for as long as PortAudio takes to open the device: call it from the
        loop's thread at start-up, or from a worker thread with the loop given.
        """
        if self._stream is not None:
            return
        self._loop = loop or asyncio.get_running_loop()
        with PORTAUDIO_LOCK:
            self._open()
        log.info("capture started on %s at %d Hz", self.device_name, self.device_rate)

    def _open(self) -> None:
        self._pa = pyaudio.PyAudio()
        try:
            info = choose_device(self._pa, self.device_spec, "input")
            self.device_rate = self.forced_rate or pick_rate(self._pa, info, RATE, "input")
            self._resampler = (
                soxr.ResampleStream(self.device_rate, RATE, 1, dtype="int16")
                if self.device_rate != RATE
                else None
            )
            self._pending.clear()
            self._stream = self._pa.open(
                format=pyaudio.paInt16,
                channels=1,
                rate=self.device_rate,
                input=True,
                input_device_index=info.index,
                frames_per_buffer=self.device_rate * self.chunk_ms // 1000,
                stream_callback=self._callback,
            )
            self.device_name = str(info)
            self.last_callback = time.monotonic()
        except BaseException:
            self._close()
            raise

    def stop(self) -> None:
        """Stop and close the device; a partial last chunk is dropped."""
        with PORTAUDIO_LOCK:
            self._close()

    def _close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.stop_stream()
            stream.close()
        pa, self._pa = self._pa, None
        if pa is not None:
            pa.terminate()

    @property
    def running(self) -> bool:
        return self._stream is not None and self._stream.is_active()

    def healthy(self, stale_s: float) -> bool:
        """Open, active, and PortAudio called back within `stale_s` (a pulled USB device
        stops the stream, or leaves it silent without a call)."""
        return self.running and time.monotonic() - self.last_callback < stale_s

    def _callback(
        self, in_data: bytes | None, frame_count: int, time_info: dict, status: int
    ) -> tuple[None, int]:
        now = self.last_callback = time.monotonic()
        loop = self._loop
        assert loop is not None
        try:
            if status & pyaudio.paInputOverflow:
                self.overflows += 1
                if self.on_overflow is not None:
                    loop.call_soon_threadsafe(self.on_overflow, self.overflows)
            if in_data:
                if self._resampler is not None:
                    samples = np.frombuffer(in_data, dtype=np.int16)
                    in_data = self._resampler.resample_chunk(samples).tobytes()
                self._pending += in_data
            while len(self._pending) >= self.chunk_bytes:
                chunk = bytes(self._pending[: self.chunk_bytes])
                del self._pending[: self.chunk_bytes]
                # Samples still pending arrived after this chunk's last one.
                t = now - len(self._pending) / 2 / RATE
                loop.call_soon_threadsafe(self.on_chunk, chunk, t)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            return None, pyaudio.paAbort
        return None, pyaudio.paContinue
