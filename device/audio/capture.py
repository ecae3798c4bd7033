"""Microphone capture: fixed-size 16 kHz chunks handed from PortAudio to the loop.

The PortAudio callback runs on its own thread. It only converts (resamples when the
device cannot record at 16 kHz), cuts exact chunks and schedules ``on_chunk`` on the
event loop with ``call_soon_threadsafe``; it never waits for the loop.

Between turns the appliance needs only the last moments before a press (the
pre-roll). With ``preroll`` set, chunks stay in a small ring on the callback's
thread until ``forward()`` and the loop is not woken for them: an idle box then
costs next to nothing beyond the sound card itself. In a hands-free conversation
the same holds for silence: forwarded with a ``QuietGate``, a microphone that has
been quiet for a while goes back to the ring (``on_pause`` says so, once) until a
chunk is loud again, and the ring goes out first.

With a ``cleaner`` (`device.audio.echo.Canceller`) the 16 kHz audio goes through
echo cancellation and noise suppression on the same thread while it is
forwarded, before it is cut into chunks: the gate judges what the service would
get, so the box's own voice, taken out, does not keep it open.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyaudio
import soxr

from device.audio import pcm
from device.audio.devices import DeviceSpec
from device.audio.echo import Canceller
from device.audio.stream import PortAudioStream
from device.live.wire import MIC_RATE

log = logging.getLogger(__name__)

RATE = MIC_RATE
#: A sound card that claims its newest sample waited longer than this is not believed.
MAX_STALE_S = 0.5
ChunkHandler = Callable[[bytes, float], None]
Chunks = list[tuple[bytes, float]]


@dataclass
class QuietGate:
    """When to stop handing silence to the loop: after `pause_after` chunks in a row whose
    RMS is below `level` (0..1), until a chunk reaches it again."""

    level: float
    pause_after: int
    quiet_run: int = 0
    paused: bool = False

    def loud(self, chunk: bytes) -> bool:
        return pcm.rms(chunk) >= self.level


class Capture(PortAudioStream):
    """Records mono s16le and delivers ``chunk_ms`` chunks at 16 kHz to ``on_chunk``.

    ``on_chunk(pcm, t)`` runs on the event loop; ``t`` is the ``time.monotonic()``
    when the chunk's last sample was recorded: the callback's time less what the
    sound card says it had kept waiting. Opens nothing until start().
    """

    THREAD = "mic"

    def __init__(
        self,
        on_chunk: ChunkHandler,
        *,
        device: DeviceSpec = None,
        chunk_ms: int = 20,
        device_rate: int | None = None,
        channels: int | None = None,
        on_overflow: Callable[[int], None] | None = None,
        preroll: int | None = None,
        on_pause: Callable[[], None] | None = None,
        cleaner: Canceller | None = None,
    ) -> None:
        """`preroll`: hold chunks, keeping the newest `preroll` of them, until forward().
        `on_pause` runs on the loop when a `QuietGate` starts holding the silence back;
        `cleaner`: what the audio goes through while it is forwarded."""
        super().__init__(device, device_rate, channels)
        self.cleaner = cleaner
        self.on_chunk = on_chunk
        self.chunk_ms = chunk_ms
        self.chunk_bytes = RATE * chunk_ms // 1000 * 2
        self._ring: deque[tuple[bytes, float]] = deque(maxlen=preroll or 0)
        self._forwarding = preroll is None
        self._gate: QuietGate | None = None
        self.on_pause = on_pause
        self._ring_lock = threading.Lock()
        self._told_delivering = False
        self.delivering = asyncio.Event()  # set once audio flows after start()
        self.on_overflow = on_overflow
        self.overflows = 0
        self._resampler: soxr.ResampleStream | None = None
        self._pending = bytearray()
        self._last_chunk_t = 0.0

    def _open(self, pa: pyaudio.PyAudio) -> pyaudio.Stream:
        info = self._choose(pa, "input", RATE)
        assert self.device_rate is not None
        self._resampler = (
            soxr.ResampleStream(self.device_rate, RATE, 1, dtype="int16")
            if self.device_rate != RATE
            else None
        )
        self._pending.clear()
        self._last_chunk_t = 0.0
        self._told_delivering = False
        return pa.open(
            format=pyaudio.paInt16,
            channels=self.channels,
            rate=self.device_rate,
            input=True,
            input_device_index=info.index,
            frames_per_buffer=self.device_rate * self.chunk_ms // 1000,
            stream_callback=self._callback,
        )

    def forward(self, gate: QuietGate | None = None) -> Chunks:
        """From now on chunks go to ``on_chunk`` (with a gate: unless the microphone is
        quiet); returns the pre-roll, oldest first."""
        with self._ring_lock:
            self._forwarding, self._gate = True, gate
            preroll = list(self._ring)
            self._ring.clear()
        return preroll

    def hold(self) -> None:
        """Keep chunks in the pre-roll ring again instead of handing them over."""
        with self._ring_lock:
            self._forwarding, self._gate = False, None

    def _route(self, chunk: bytes, t: float) -> tuple[Chunks, bool]:
        """Under the ring lock: the chunks to hand over now, and whether the gate just paused."""
        gate = self._gate
        held = not self._forwarding or (gate is not None and gate.paused)
        if gate is not None and gate.loud(chunk):
            gate.quiet_run, gate.paused = 0, False
            if held:  # speech after silence: the moments before it go first
                handed = [*self._ring, (chunk, t)]
                self._ring.clear()
                return handed, False
        elif gate is not None and not held:
            gate.quiet_run += 1
            gate.paused = gate.quiet_run >= gate.pause_after
            return [(chunk, t)], gate.paused
        if held:
            self._ring.append((chunk, t))
            return [], False
        return [(chunk, t)], False

    def _recorded(self, time_info: dict, frames: int) -> float:
        """When a callback's newest sample was recorded (time.monotonic()).

        PortAudio gives the capture time of the buffer's first sample; host APIs that
        do not know it give 0, and then the callback's own time is all there is.
        """
        now = self._called()
        first = self._on_monotonic(time_info.get("input_buffer_adc_time", 0.0), time_info, now)
        if first is None or not self.device_rate:
            return now
        return min(max(first + frames / self.device_rate, now - MAX_STALE_S), now)

    def _started(self) -> None:
        log.info(
            "capture started on %s at %d Hz, %d channel(s)",
            self.device_name,
            self.device_rate,
            self.channels,
        )

    def _callback(
        self, in_data: bytes | None, frame_count: int, time_info: dict, status: int
    ) -> tuple[None, int]:
        recorded = self._recorded(time_info, frame_count)
        loop = self._loop
        assert loop is not None
        cleaner = self.cleaner
        try:
            if not self._told_delivering:
                self._told_delivering = True
                loop.call_soon_threadsafe(self.delivering.set)
            if status & pyaudio.paInputOverflow:
                self.overflows += 1
                if cleaner is not None:
                    cleaner.resync()
                if self.on_overflow is not None:
                    loop.call_soon_threadsafe(self.on_overflow, self.overflows)
            if in_data and self.channels == 1 and self._resampler is None and cleaner is None:
                self._pending += in_data  # already what the service takes
            elif in_data:
                samples = np.frombuffer(in_data, dtype=np.int16)
                if self.channels > 1:  # the first microphone of an interleaved frame
                    samples = samples[:: self.channels]
                if self._resampler is not None:
                    samples = self._resampler.resample_chunk(samples)
                if cleaner is not None:
                    first = recorded - samples.size / RATE
                    samples = cleaner.process(samples, first, active=self._forwarding)
                self._pending += samples.tobytes()
            behind = cleaner.behind_s if cleaner is not None else 0.0
            # A cleaner that just started hands over a chunk less what it holds back; sent
            # whole chunks only, every later chunk would wait a period for its last samples.
            short = len(self._pending) % self.chunk_bytes if cleaner and cleaner.started else 0
            while len(self._pending) >= (short or self.chunk_bytes):
                size, short = short or self.chunk_bytes, 0
                chunk = bytes(self._pending[:size])
                del self._pending[:size]
                # Samples still pending were recorded after this chunk's last one. A
                # late callback bunches its audio: the estimate never runs backwards.
                t = max(recorded - behind - len(self._pending) / 2 / RATE, self._last_chunk_t)
                self._last_chunk_t = t
                with self._ring_lock:
                    handed, paused = self._route(chunk, t)
                for data, at in handed:
                    loop.call_soon_threadsafe(self.on_chunk, data, at)
                if paused and self.on_pause is not None:
                    loop.call_soon_threadsafe(self.on_pause)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            return None, pyaudio.paAbort
        return None, pyaudio.paContinue
