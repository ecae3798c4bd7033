"""Speaker playback from a buffer the PortAudio callback drains.

The receive loop calls ``feed()`` and never waits for the speaker: the audio goes
into a lock-protected buffer and PortAudio's callback takes one period at a time,
writing silence when there is nothing (the stream never underruns, so PulseAudio
and ALSA never have to restart it). ``clear()`` drops everything not yet handed to
PortAudio, so after a barge-in the speaker falls silent within PortAudio's own
output latency (``output_latency``), which is set by ``period_ms``.

While nothing can play (the box is idle) the stream rests: ``rest()`` stops it
once everything fed has played, ``wake()`` (and any ``feed()``) starts it again
in a millisecond or two. A stream playing silence would otherwise cost CPU every
period, all day.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import numpy as np
import pyaudio
import soxr

from device.audio.devices import DeviceSpec
from device.audio.stream import PORTAUDIO_LOCK, PortAudioStream
from device.live.wire import REPLY_RATE

log = logging.getLogger(__name__)

RATE = REPLY_RATE
#: After the last sound, the stream keeps running this long for what comes next.
REST_AFTER_S = 2.0
#: The most audio queued for the speaker before `wait_for_room` makes the feeder wait:
#: a reply sent faster than it plays stays with the service (its flow control holds
#: it) instead of in the box's memory, and a barge-in still drops all of it at once.
AHEAD_S = 4.0


class Playback(PortAudioStream):
    """Plays 24 kHz mono s16le fed from the event loop; opens nothing until start()."""

    def __init__(
        self,
        *,
        device: DeviceSpec = None,
        period_ms: int = 10,
        device_rate: int | None = None,
        channels: int | None = None,
        on_underflow: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(device, device_rate, channels)
        self.period_ms = period_ms
        self.on_underflow = on_underflow
        self.underflows = 0  # PortAudio reported output underflows (not empty buffer)
        self._resampler: soxr.ResampleStream | None = None
        self._lock = threading.Lock()
        self._buffer = bytearray()  # device-rate s16le not yet handed to PortAudio
        self._generation = 0  # bumped by feed() and clear(); stale drain notices ignored
        self._waiting_drain = False
        self._drained = asyncio.Event()
        self._drained.set()
        self._room_below: int | None = None  # a feeder waits until the buffer is under this
        self._room = asyncio.Event()
        #: 0..1, applied to what is fed from now on; squared so that halfway sounds half as loud.
        self.volume = 1.0
        self._resting = False  # stopped on purpose: nothing can play
        self._want_rest = False  # rest() was asked for and wake() has not come since
        self._rest_timer: asyncio.TimerHandle | None = None

    # -- life ------------------------------------------------------------------

    def _open(self, pa: pyaudio.PyAudio) -> pyaudio.Stream:
        info = self._choose(pa, "output", RATE)
        assert self.device_rate is not None
        self._resampler = self._new_resampler()
        return pa.open(
            format=pyaudio.paInt16,
            channels=self.channels,
            rate=self.device_rate,
            output=True,
            output_device_index=info.index,
            frames_per_buffer=self.device_rate * self.period_ms // 1000,
            stream_callback=self._callback,
        )

    def _started(self) -> None:
        log.info(
            "playback started on %s at %d Hz, %d channel(s), output latency %.1f ms",
            self.device_name,
            self.device_rate,
            self.channels,
            self.output_latency * 1000,
        )

    def stop(self) -> None:
        """Close the device; whatever was still buffered is dropped."""
        self._cancel_rest()
        super().stop()
        self._resting = False
        self.clear()

    # -- resting while idle ---------------------------------------------------

    def rest(self) -> None:
        """Nothing is expected to play: stop the stream once what was fed has played and
        REST_AFTER_S more has passed (a sound fed meanwhile plays, and delays the rest)."""
        self._want_rest = True
        self._cancel_rest()
        if self._stream is not None and not self._resting and self._loop is not None:
            self._rest_timer = self._loop.call_later(REST_AFTER_S, self._rest_if_quiet)

    def _rest_if_quiet(self) -> None:
        self._rest_timer = None
        if self._stream is None or self._resting:
            return
        if not self._drained.is_set():  # still playing: look again later
            self.rest()
            return
        with PORTAUDIO_LOCK:  # the keeper may be closing it from a worker thread
            if self._stream is not None:
                self._stream.stop_stream()  # waits for the last period: a few ms
                self._resting = True

    def wake(self) -> None:
        """Something may play soon: run the stream, and keep it running until rest()."""
        self._want_rest = False
        self._cancel_rest()
        self._run()

    def _run(self) -> None:
        if self._stream is None or not self._resting:
            return
        self._resting = False
        with PORTAUDIO_LOCK:  # the keeper may be closing it from a worker thread
            if self._stream is None:
                return
            try:
                self._stream.start_stream()
            except OSError as exc:  # the device went while resting: the keeper reopens it
                log.warning("the speaker did not start again: %s", exc)
                return
        self._restarted()

    def _cancel_rest(self) -> None:
        if self._rest_timer is not None:
            self._rest_timer.cancel()
            self._rest_timer = None

    def healthy(self, stale_s: float, grace_s: float = 0.0) -> bool:
        """A resting stream is healthy: it is stopped on purpose."""
        if self._resting and self._stream is not None:
            return True
        return super().healthy(stale_s, grace_s)

    def _new_resampler(self) -> soxr.ResampleStream | None:
        if self.device_rate in (None, RATE):
            return None
        return soxr.ResampleStream(RATE, self.device_rate, 1, dtype="int16")

    @property
    def output_latency(self) -> float:
        """Seconds PortAudio reports between handing it a sample and the speaker."""
        return self._stream.get_output_latency() if self._stream is not None else 0.0

    # -- the loop's side -------------------------------------------------------

    def feed(self, pcm: bytes, last: bool = False) -> None:
        """Queue 24 kHz audio. ``last`` flushes the resampler's tail (end of a reply)."""
        if self._resampler is not None:
            samples = np.frombuffer(pcm, dtype=np.int16)
            pcm = self._resampler.resample_chunk(samples, last=last).tobytes()
            if last:
                self._resampler.clear()
        if self.volume < 1.0 and pcm:
            scaled = np.frombuffer(pcm, dtype=np.int16) * (max(0.0, self.volume) ** 2)
            pcm = scaled.astype(np.int16).tobytes()
        if not pcm:
            return
        if self._resting:  # an earcon while idle: play it, then rest again
            self._run()
        if self._want_rest:
            self.rest()
        with self._lock:
            self._buffer += pcm
            self._generation += 1
            self._waiting_drain = True
        self._drained.clear()

    def clear(self) -> int:
        """Drop everything not yet played (barge-in); returns the bytes dropped."""
        with self._lock:
            dropped = len(self._buffer)
            self._buffer.clear()
            self._generation += 1
            self._waiting_drain = False
            self._room_below = None
        if self._resampler is not None:
            self._resampler.clear()
        self._drained.set()
        self._room.set()
        return dropped

    async def wait_for_room(self, ahead_s: float = AHEAD_S) -> None:
        """Return once less than `ahead_s` of audio waits to be played (at once after clear()).

        The reply's receiver awaits this before it reads on, so a reply that arrives
        faster than it plays waits in the service rather than here.
        """
        limit = round(ahead_s * (self.device_rate or RATE)) * 2
        while True:
            with self._lock:
                if len(self._buffer) < limit:
                    return
                self._room_below = limit  # the callback tells the loop once it is under
                self._room.clear()
            await self._room.wait()

    @property
    def buffered_ms(self) -> float:
        """Audio queued and not yet handed to PortAudio, in milliseconds."""
        if not self.device_rate:
            return 0.0
        with self._lock:
            return len(self._buffer) / 2 / self.device_rate * 1000

    @property
    def drained(self) -> asyncio.Event:
        """Set once the last fed sample has been handed to PortAudio (or after clear())."""
        return self._drained

    async def wait_drained(self) -> None:
        await self._drained.wait()

    async def play_out(self) -> None:
        """Wait until everything fed has sounded, the resampler's tail included."""
        self.feed(b"", last=True)
        await self.wait_drained()
        await asyncio.sleep(self.output_latency)  # the last period handed over still has to play

    def _on_drained(self, generation: int) -> None:
        if generation == self._generation:
            self._drained.set()

    # -- PortAudio's thread ----------------------------------------------------

    def _callback(
        self, in_data: bytes | None, frame_count: int, time_info: dict, status: int
    ) -> tuple[bytes, int]:
        self._called()
        wanted = frame_count * 2
        with self._lock:
            out = bytes(self._buffer[:wanted])
            del self._buffer[:wanted]
            notify = self._waiting_drain and not self._buffer
            if notify:
                self._waiting_drain = False
            room = self._room_below is not None and len(self._buffer) < self._room_below
            if room:
                self._room_below = None
            generation = self._generation
        loop = self._loop
        assert loop is not None
        try:
            if status & pyaudio.paOutputUnderflow:
                self.underflows += 1
                if self.on_underflow is not None:
                    loop.call_soon_threadsafe(self.on_underflow, self.underflows)
            if notify:
                loop.call_soon_threadsafe(self._on_drained, generation)
            if room:
                loop.call_soon_threadsafe(self._room.set)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            return bytes(wanted * self.channels), pyaudio.paAbort
        out += bytes(wanted - len(out))
        if self.channels > 1:  # the same sound on every channel of the device
            out = np.repeat(np.frombuffer(out, dtype=np.int16), self.channels).tobytes()
        return out, pyaudio.paContinue
