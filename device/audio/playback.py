"""Speaker playback: one writer thread hands a buffer to PortAudio's blocking stream.

The receive loop calls ``feed()`` and never waits for the speaker: the audio goes
into a lock-protected buffer and the writer thread ("speaker") hands it to
PortAudio. The stream runs only while there is audio to play. A reply's first
samples go into an idle device and sound at once (a callback stream would start
behind a buffer of silence), and once the last has played the stream stops, so
an idle box or a quiet conversation costs the speaker nothing: no callbacks, no
wake-ups. A gap inside a reply (its next chunk late on a jittery link) is not
its end: the stream plays silence on through it, up to ``BRIDGE_S``, so that
the echo canceller's reference follows on. While it plays, the writer keeps the
device between half full and full (``DEVICE_S``), waking a few times a reply
chunk, so a writer that runs late on a busy Pi still leaves audio queued.
``clear()`` (barge-in) drops the buffer and aborts the stream: the speaker falls
silent at once, whatever the device still held.

With a ``far_end`` (`device.audio.echo.FarEnd`) the writer hands it every piece
exactly as it gives it to PortAudio (after volume, earcons included), placed on
its own count of when the device plays it: the reference the echo canceller takes
out of the microphone. A barge-in's abort tells it that what the device held never
played, and an underflow (below) that what played since came later than counted.

PortAudio reports when the device ran out of audio while it played. That is the
speaker's own fault (``underflows``: a click the box made) only if the audio was
already waiting; when the next chunk of a reply arrives after the device has
played all it had, the gap is the link's (``starved``: the service paces its
replies in real time, and a reply starts at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import pyaudio
import soxr

from device.audio.alsa import card_device
from device.audio.devices import DeviceSpec
from device.audio.echo import FarEnd
from device.audio.output_stream import OutputStream
from device.audio.stream import PortAudioStream
from device.live.wire import REPLY_RATE

log = logging.getLogger(__name__)

Job = Literal["write", "bridge", "tail", "stop", "abort", "close"]
RATE = REPLY_RATE
#: What the device holds ahead of the sample playing: room for a late writer. It
#: costs no latency (a reply starts into an empty device) and a barge-in drops it.
DEVICE_S = 0.1
#: The most audio queued for the speaker before `wait_for_room` makes the feeder wait
#: (here at the device's rate and channels); the link reads further ahead, compactly
#: (device.live.read_ahead), and a barge-in drops all of it at once.
AHEAD_S = 4.0
#: Silence after each run: stopping the stream lost the last fraction of a millisecond
#: on the PulseAudio loopback, and this carries that loss instead of the sound.
TAIL_S = 0.01
#: Audio fed this long before the device would have run out was waiting for the writer,
#: and goes on without a gap: the trailing silence goes in only once the device has this
#: little left (a reply's next chunk that comes just in time, on a jittery link, sounded
#: after it: a click in the middle of a word).
WAITING_S = 0.005
#: Within a reply (audio fed, and neither its end nor a clear() since), a device that ran
#: out of it plays silence on for this long before the stream stops: a jittery link's
#: gap (Wi-Fi's retries, a scan, a roam: up to a second or two) then leaves the echo where
#: it was. A new run of the stream moves it, and the canceller starts afresh and lowers a
#: person talking over the box for its next second of speaking (GUARD_S). A longer stall
#: is a pause (a tool's wait, a link gone), and the speaker stops as at a reply's end.
BRIDGE_S = 2.0
#: The kernel's sound device nodes: a card's playback device is pcmC<card>D<device>p.
SOUND_NODES = Path("/dev/snd")
#: A device node and its inode: a card plugged back has its nodes made anew. (Not their
#: change time: a seat's login changes their ACLs, and with them that.)
Node = tuple[Path, int] | None


def _node(portaudio_name: str) -> Node:
    """The playback node of the card device PortAudio lists as `portaudio_name`, as it is
    now; None for a plugin ("default", "pulse"), or a node not to be seen."""
    numbers = card_device(portaudio_name)
    if numbers is None:
        return None
    path = SOUND_NODES / f"pcmC{numbers[0]}D{numbers[1]}p"
    try:
        return path, path.stat().st_ino
    except OSError:
        return None


def _same_node(node: Node) -> bool:
    """The node is still the one opened: not gone, nor made anew (a card plugged back)."""
    if node is None:
        return True
    path, inode = node
    try:
        return os.stat(path).st_ino == inode
    except OSError:
        return False


class Playback(PortAudioStream):
    """Plays 24 kHz mono s16le fed from the event loop; opens nothing until start()."""

    THREAD = "speaker"

    def __init__(
        self,
        *,
        device: DeviceSpec = None,
        period_ms: int = 10,
        device_rate: int | None = None,
        channels: int | None = None,
        on_underflow: Callable[[int], None] | None = None,
        far_end: FarEnd | None = None,
    ) -> None:
        super().__init__(device, device_rate, channels)
        self.period_ms = period_ms
        self.far_end = far_end
        self.on_underflow = on_underflow
        self.underflows = 0  # the device ran out while audio waited: the speaker's fault
        self.starved = 0  # it ran out because the reply's next audio came late
        self._resampler: soxr.ResampleStream | None = None
        self._cond = threading.Condition()
        self._buffer = bytearray()  # device-format frames not yet handed to PortAudio
        self._waiting_since: float | None = None  # when the oldest of it was fed
        self._generation = 0  # bumped by feed() and clear(); stale drain notices ignored
        self._abort = False  # clear() asks the writer to drop what the device holds
        self._closing = False
        self._tail = False  # the trailing silence is written: stop once it has played
        self._in_reply = False  # audio fed whose end (last=True) has not come: bridge gaps
        self._dry_since: float | None = None  # when the device ran out within the reply
        #: The PortAudio error the writer stopped on (the device went); None while it runs.
        self._failure: OSError | None = None
        self._writer_stopped = asyncio.Event()  # set on the loop once it has, for play_out
        self.on_change: Callable[[], None] | None = None  # the audio keeper's
        self._playing = False  # the writer has started (or is starting) a run of the stream
        self._writer: threading.Thread | None = None
        self._node: Node = None  # the card's node at the open: an idle speaker's card going
        self._drained = asyncio.Event()
        self._drained.set()
        self._room_below: int | None = None  # a feeder waits until the buffer is under this
        self._room = asyncio.Event()
        #: 0..1, applied to what is fed from now on; squared so that halfway sounds half as loud.
        self.volume = 1.0

    # -- life ------------------------------------------------------------------

    def _open(self, pa: pyaudio.PyAudio) -> OutputStream:
        info = self._choose(pa, "output", RATE)
        self._node = _node(info.name)
        assert self.device_rate is not None
        self._resampler = self._new_resampler()
        return OutputStream(
            info.index,
            self.device_rate,
            self.channels,
            self.device_rate * self.period_ms // 1000,
            DEVICE_S,
        )

    def _started(self) -> None:
        self._closing, self._failure = False, None
        writer = threading.Thread(
            target=self._write_loop, args=(self._stream,), name="speaker", daemon=True
        )
        writer.start()
        self._writer = writer
        log.info(
            "playback started on %s at %d Hz, %d channel(s), output latency %.1f ms",
            self.device_name,
            self.device_rate,
            self.channels,
            self.output_latency * 1000,
        )

    def _release(self, stream: OutputStream) -> None:
        """Stop the writer, then close the stream: what it still held is dropped."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.join()
        stream.close()

    def stop(self) -> None:
        """Close the device; whatever was still buffered is dropped."""
        super().stop()
        self.clear()

    @property
    def busy(self) -> bool:
        """While it plays, from the call that starts the stream on: a call that never
        returns (a driver that hangs) cannot say so."""
        return self._playing

    def trouble(self, stale_s: float, grace_s: float = 0.0) -> str | None:
        """None while open and writing: an idle speaker is stopped on purpose, a playing
        one calls PortAudio at least every DEVICE_S / 2. A PortAudio error (a vanished
        device) is trouble, and so is a call that has not returned within `stale_s`, and a
        card that went, or came back, while it was idle: nothing it does would fail until
        the next reply, which would be lost."""
        if self._stream is None:
            return "the speaker is not open"
        if self._failure is not None:
            return "PortAudio failed"
        if not _same_node(self._node):
            return "its card went away"
        last = self._last_call
        if not self._playing or last is None:
            return None
        age, call = time.monotonic() - last, self._in_call
        if age < stale_s:
            return None
        return f"{call}() has not returned for {age:.1f} s" if call else f"no write for {age:.1f} s"

    def _new_resampler(self) -> soxr.ResampleStream | None:
        if self.device_rate in (None, RATE):
            return None
        return soxr.ResampleStream(RATE, self.device_rate, 1, dtype="int16")

    @property
    def output_latency(self) -> float:
        """Seconds PortAudio reports between handing it a sample and the speaker."""
        stream = self._stream  # read once: the keeper's worker may close it meanwhile
        return stream.output_latency if stream is not None else 0.0

    # -- the loop's side -------------------------------------------------------

    def feed(self, pcm: bytes, last: bool = False) -> None:
        """Queue 24 kHz audio. ``last`` flushes the resampler's tail (the end of a reply or
        of an earcon: nothing follows it soon).

        A closed speaker (its card gone) drops it: an error beep for a press meanwhile
        would otherwise sound when the card comes back, and a drain never come."""
        if self._stream is None:
            return
        if self._resampler is not None:
            samples = np.frombuffer(pcm, dtype=np.int16)
            pcm = self._resampler.resample_chunk(samples, last=last).tobytes()
            if last:
                self._resampler.clear()
        if self.volume < 1.0 and pcm:
            scaled = np.frombuffer(pcm, dtype=np.int16) * (max(0.0, self.volume) ** 2)
            pcm = scaled.astype(np.int16).tobytes()
        if not pcm:
            if last:
                self._reply_ends()
            return
        if self.channels > 1:  # the same sound on every channel of the device
            pcm = np.repeat(np.frombuffer(pcm, dtype=np.int16), self.channels).tobytes()
        with self._cond:
            if not self._buffer:
                self._waiting_since = time.monotonic()
            self._buffer += pcm
            self._in_reply = not last
            self._generation += 1
            self._cond.notify()
        self._drained.clear()

    def clear(self) -> int:
        """Drop everything not yet played (barge-in); returns the bytes dropped."""
        with self._cond:
            dropped = len(self._buffer)
            self._buffer.clear()
            self._waiting_since = None
            self._generation += 1
            self._abort = True
            self._in_reply = False
            self._room_below = None
            self._cond.notify()
        if self._resampler is not None:
            self._resampler.clear()
        self._drained.set()
        self._room.set()
        return dropped

    def _reply_ends(self) -> None:
        """Nothing follows what was fed soon: a gap from here on is the end, not a pause."""
        with self._cond:
            self._in_reply = False
            self._cond.notify()

    def has_room(self, ahead_s: float = AHEAD_S) -> bool:
        """Less than `ahead_s` of audio waits to be played."""
        with self._cond:
            return len(self._buffer) < self._limit(ahead_s)

    async def wait_for_room(self, ahead_s: float = AHEAD_S) -> None:
        """Return once less than `ahead_s` of audio waits to be played (at once after clear()).

        The reply's audio is handed over only then: what arrives faster than it plays
        waits in the link's read-ahead, and past that in the service.
        """
        limit = self._limit(ahead_s)
        while True:
            with self._cond:
                if len(self._buffer) < limit:
                    return
                self._room_below = limit  # the writer tells the loop once it is under
                self._room.clear()
            await self._room.wait()

    def _limit(self, ahead_s: float) -> int:
        return round(ahead_s * (self.device_rate or RATE)) * 2 * self.channels

    @property
    def buffered_ms(self) -> float:
        """Audio queued and not yet handed to PortAudio, in milliseconds."""
        if not self.device_rate:
            return 0.0
        with self._cond:
            return len(self._buffer) / (2 * self.channels) / self.device_rate * 1000

    @property
    def drained(self) -> asyncio.Event:
        """Set once everything fed has played and the stream has stopped (or after clear())."""
        return self._drained

    async def wait_drained(self) -> None:
        """Return once everything fed has played: a clear() that new audio followed at
        once is no drain."""
        while True:
            await self._drained.wait()
            if self._drained.is_set():
                return

    async def play_out(self) -> None:
        """Wait until everything fed has sounded, the resampler's tail included; OSError
        if the speaker stops on an error first (a card pulled as it plays): no drain comes
        then, and `ask --play` and the doctor, which have no audio keeper to close it,
        waited for ever."""
        self.feed(b"", last=True)
        self._writer_stopped.clear()
        if self._failure is None:
            waits = {asyncio.ensure_future(self.wait_drained()),
                     asyncio.ensure_future(self._writer_stopped.wait())}
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()
        if self._failure is not None:
            raise OSError(f"the speaker stopped: {self._failure}")

    def _on_drained(self, generation: int) -> None:
        if generation == self._generation:
            self._drained.set()

    # -- the writer thread -----------------------------------------------------

    def _write_loop(self, stream: OutputStream) -> None:
        """Start the stream for the first audio, keep the device DEVICE_S full, stop it
        once the last sample has played; drop everything at clear()."""
        assert self.device_rate is not None
        rate, frame = self.device_rate, stream.frame_bytes
        period = rate * self.period_ms // 1000
        silence: dict[Job, bytes] = {
            "tail": bytes(round(TAIL_S * rate) * frame),
            "bridge": bytes(period * frame),
        }
        running, runs_out = False, 0.0  # when the device has played all it was given
        on_time = True  # the last write's audio was waiting before the device ran out
        new_run = False
        self._playing = False
        try:
            while True:
                with self._cond:
                    job, piece, generation, since = self._next(running, runs_out, rate * frame)
                now = time.monotonic()
                match job:
                    case "close":
                        return
                    case "abort":
                        if running:
                            self._portaudio(stream.abort)
                            running = self._playing = False
                            if self.far_end is not None:
                                self.far_end.cut(now)
                        continue
                    case "stop":
                        self._portaudio(stream.stop)
                        running = self._playing = False
                        self._tell(self._on_drained, generation)
                        continue
                    case "tail" | "bridge":
                        piece = silence[job]
                if not running:
                    # Busy from here: the keeper looks every second until the run ends, so
                    # a start that never returns is found too. The stamp left from the last
                    # reply (seconds ago) goes first: it made a slow start look unplugged.
                    self._last_call = None
                    self._playing = True
                    self._tell_keeper()
                    self._portaudio(stream.start)
                    now = time.monotonic()  # the first write starts the device
                    running, runs_out, on_time = True, now, True
                    new_run = True
                    piece += bytes(max(0, period * frame - len(piece)))  # at least a period
                # PortAudio learns of a run-out when it next looks, which may be a write
                # later: it is the speaker's fault only if this write and the one before
                # both had their audio waiting before the device would run out.
                waited = on_time
                on_time = since is not None and since < runs_out - WAITING_S
                plays = max(runs_out, now)  # the device has played all before it by then
                if self.far_end is not None:
                    mono = np.frombuffer(piece, dtype=np.int16)[:: self.channels]
                    self.far_end.played(mono, rate, plays, new_run)
                    new_run = False
                if self._portaudio(stream.write, piece):
                    self._ran_out(waited=waited and on_time)
                runs_out = plays + len(piece) / frame / rate
        except OSError as exc:  # the device went: the keeper reopens it
            log.warning("the speaker stopped: %s", exc)
            self._failure = exc
            self._tell_keeper()
            self._tell(self._writer_stopped.set)

    def _ran_out(self, waited: bool) -> None:
        """PortAudio says the device ran out of audio since the last write."""
        if not waited:
            self.starved += 1
            return
        self.underflows += 1
        if self.far_end is not None:
            self.far_end.ran_dry()
        if self.on_underflow is not None:
            self._tell(self.on_underflow, self.underflows)

    def _tell_keeper(self) -> None:
        if self.on_change is not None:
            self._tell(self.on_change)

    def _tell(self, callback: Callable[..., None], *args: object) -> None:
        """Run `callback` on the loop, unless the loop is closed (nobody is listening)."""
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, *args)

    def _next(
        self, running: bool, runs_out: float, bytes_per_s: int
    ) -> tuple[Job, bytes, int, float | None]:
        """Under the lock: wait for the writer's next job and take what it writes, with
        when the oldest of that was fed (None for silence of our own).

        Waits forever while idle; while playing, until the device is half empty
        or, with nothing more to play, until it has played out (WAITING_S before
        that, the trailing silence goes in, or within a reply the bridge's silence,
        which from then on keeps it half full)."""
        while not self._closing:
            if self._abort:
                self._abort = False
                self._tail = False
                self._dry_since = None
                return "abort", b"", self._generation, None
            # What the device still holds, in seconds (nothing once stopped or aborted).
            left = runs_out - time.monotonic() if running else 0.0
            if not running and not self._buffer:
                self._cond.wait()
            elif running and not self._buffer:
                # Once the bridge has begun, silence is kept as far ahead as audio is: a
                # writer late on a busy Pi leaves the device running, the echo in place.
                bridging = self._dry_since is not None and self._in_reply
                ahead = DEVICE_S / 2 if bridging else WAITING_S
                if left > ahead or (self._tail and left > 0):
                    self._cond.wait(left - ahead if left > ahead else left)
                elif self._bridges(runs_out):
                    return "bridge", b"", self._generation, None
                elif not self._tail:
                    self._tail = True
                    return "tail", b"", self._generation, None
                else:
                    self._tail = False
                    self._dry_since = None
                    return "stop", b"", self._generation, None
            elif running and left > DEVICE_S / 2:
                self._cond.wait(left - DEVICE_S / 2)
            else:
                room = int((DEVICE_S - max(0.0, left)) * bytes_per_s)
                take = min(len(self._buffer), room - room % (2 * self.channels))
                piece, since = bytes(self._buffer[:take]), self._waiting_since
                del self._buffer[:take]
                if not self._buffer:
                    self._waiting_since = None
                if self._room_below is not None and len(self._buffer) < self._room_below:
                    self._room_below = None
                    self._tell(self._room.set)
                self._tail, self._dry_since = False, None
                return "write", piece, self._generation, since
        return "close", b"", self._generation, None

    def _bridges(self, runs_out: float) -> bool:
        """Under the lock, the device about to run out: within a reply, and not yet for
        BRIDGE_S, it plays silence on (what comes meanwhile follows what the device holds
        of it: up to DEVICE_S / 2 and a period)."""
        if not self._in_reply or self._tail:
            return False
        if self._dry_since is None:
            self._dry_since = runs_out
        return runs_out - self._dry_since < BRIDGE_S
