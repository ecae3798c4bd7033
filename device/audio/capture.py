"""Microphone capture: fixed-size 16 kHz chunks handed from ALSA to the loop.

A thread of its own reads the device (`device.audio.alsa`; chosen from PortAudio's
list, as the speaker is). It only converts (resamples when the device cannot
record at 16 kHz), cuts exact chunks and schedules ``on_chunk`` on the event loop
with ``call_soon_threadsafe``; it never waits for the loop.

Between turns the appliance needs only the last moments before a press (the
pre-roll). With ``preroll`` set, chunks stay in a small ring on the reader's
thread until ``forward()``, the loop is not woken for them, and the thread reads
the device twice a second (IDLE_READ_MS) instead of as its audio arrives: an idle box then
costs next to nothing beyond the sound card itself. The ring keeps up to
PRESS_LAG_S more: the appliance takes a press when it gets to it (after closing
the last session, say), and ``forward(since=...)`` hands over what was recorded
from the button's edge on and the pre-roll before it, nothing older (and, for a
turn already over at its release, nothing after the chunk holding that instant: the
ring keeps it for the next press, taken as late). In a
hands-free conversation the same holds for silence: forwarded with a ``QuietGate``,
a microphone that has been quiet for a while goes back to the ring (``on_pause``
says so, once) until a chunk is loud again, and the ring goes out first: only the
pre-roll of it then, or the gate's lead-in if longer.

With a ``cleaner`` (`device.audio.echo.Canceller`) the 16 kHz audio goes through
echo cancellation and noise suppression on the same thread while it is
forwarded, before it is cut into chunks: the gate judges what the service would
get, so the box's own voice, taken out, does not keep it open.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import soxr

from device.audio import pcm
from device.audio.alsa import AlsaError, CapturePcm, alsa_name
from device.audio.card_clock import CardClock
from device.audio.devices import DeviceSpec, choose_format, found_again
from device.audio.echo import Canceller
from device.audio.keeper import STALE_S, START_GRACE_S
from device.audio.portaudio import open_portaudio
from device.audio.stream import PORTAUDIO_LOCK, name_thread
from device.live.wire import MIC_RATE

log = logging.getLogger(__name__)

RATE = MIC_RATE
#: Between turns only the pre-roll is kept: the device is read this often (ms), not as
#: its audio arrives (25 times a second), so an idle box wakes twice a second (a press
#: reads what waits at once). At most a third of the device's buffer, whatever the card
#: allows: a read that runs late loses nothing.
IDLE_READ_MS = 500
#: A hands-free conversation's silence, held back, is read this often while the box is
#: silent too: speech after it reaches the service at most this much later, its start
#: kept in the ring (the service's own detection takes far longer, and the end of what
#: was said, which starts the reply, is read as it arrives). At 80 ms the reader cost
#: 0.19 s/min of a quiet conversation's 0.37 here, at 160 ms 0.13 of 0.31 (a read
#: through PulseAudio's plugin costs 0.16 ms). While a person may talk over the box,
#: as it arrives (listen_closely).
PAUSED_READ_MS = 160
#: After a release the device is read this often (ms) until it has the release's
#: instant: a card's own device has it within a millisecond or two, not a period later.
FINISH_READ_MS = 5
#: Reading as audio arrives, a device that delivers nothing for this long is looked at.
STALL_MS = 200
#: The device's buffer, if the card allows it: a reader this late loses nothing.
BUFFER_S = 2.0
#: Between turns the ring keeps this much more than the pre-roll: a press the appliance
#: takes this late (busy switching the camera off, a second or two on a Pi, then closing
#: the last session, up to CLOSE_TIMEOUT_S) still sends everything said from the button's
#: edge on. 3 s of 16 kHz audio is 96 KB, kept on the box and never sent unless a press
#: reaches back to it; a press taken later loses its first words beyond this.
PRESS_LAG_S = 3.0
#: A turn whose device delivered nothing but zeros for this long has a muted microphone
#: (its capture switch off, a speakerphone's mute button) or one a brown-out left
#: delivering zeros: no room is that quiet, and the keeper sees reads on time. Said once
#: an open; between turns (a quiet night, a microphone that gates its own noise) never,
#: nor in a turn no press began (a hook's words, perhaps to an empty room).
DIGITAL_SILENCE_S = 3.0
ChunkHandler = Callable[[bytes, float], None]
Chunks = list[tuple[bytes, float]]


@dataclass
class QuietGate:
    """When to stop handing silence to the loop: after `pause_after` chunks in a row whose
    RMS is below `level` (0..1), until a chunk reaches it again; that one goes out after
    the last `lead_in` chunks held back (a word's soft start), or the pre-roll if longer."""

    level: float
    pause_after: int
    lead_in: int = 0
    quiet_run: int = 0
    paused: bool = False

    def loud(self, chunk: bytes) -> bool:
        return pcm.rms(chunk) >= self.level


class Capture:
    """Records mono s16le and delivers ``chunk_ms`` chunks at 16 kHz to ``on_chunk``.

    ``on_chunk(pcm, t)`` runs on the event loop; ``t`` is the ``time.monotonic()``
    when the chunk's last sample was recorded (`CardClock`). Opens nothing until
    start(); then one thread of its own reads the device: as audio arrives while it
    is forwarded or finishing, every PAUSED_READ_MS while a gate holds silence back,
    every IDLE_READ_MS while it only keeps the pre-roll.
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
        """`preroll`: hold chunks until forward(), keeping the newest `preroll` of them and
        PRESS_LAG_S more (only what forward() is given a press's edge for goes out).
        `on_pause` runs on the loop when a `QuietGate` starts holding the silence back;
        `cleaner`: what the audio goes through while it is forwarded. `device_rate` and
        `channels` force a format (tests); by default the device's best fit."""
        self._find = device  # the spec; once an index opened, that device's name (a reopen)
        self.device_name = ""
        self.device_rate: int | None = None  # the rate the device really runs at
        self.channels = 1  # the channels it really runs with (converted to mono here)
        self._forced = (device_rate, channels)
        self.cleaner = cleaner
        self.on_chunk = on_chunk
        self.chunk_ms = chunk_ms
        self.chunk_bytes = RATE * chunk_ms // 1000 * 2
        #: Held between turns: the pre-roll and PRESS_LAG_S more (a press taken late);
        #: while forwarded (a gate holding silence back), the pre-roll only.
        lag = math.ceil(PRESS_LAG_S * 1000 / chunk_ms)
        self._held_chunks = 0 if preroll is None else preroll + lag
        self._preroll_chunks = preroll or 0
        self._ring: deque[tuple[bytes, float]] = deque(maxlen=self._held_chunks)
        self._preroll_s = (preroll or 0) * chunk_ms / 1000
        self._from = 0.0  # forwarded: chunks recorded up to this are not handed over
        self._forwarding = preroll is None
        self._gate: QuietGate | None = None
        self._until: float | None = None  # finishing: hand over at once, up to this time
        #: Forwarded for a turn over at this time (a press taken after its release, or a
        #: release): the chunk holding it is the last handed over, the ring keeps what follows.
        self._turn_ends: float | None = None
        self._closely = False  # listen_closely(): no slower reads while the gate holds back
        self._muted = False  # mute(): nothing read is handed over or kept
        self._heard_from = 0.0  # chunks recorded before this (the last unmute) are dropped
        self._idle_read_ms = IDLE_READ_MS
        self.on_pause = on_pause
        self._ring_lock = threading.Lock()
        self._told_delivering = False
        self.delivering = asyncio.Event()  # set once audio flows after start()
        self.on_overflow = on_overflow
        self.overflows = 0
        self.on_change: Callable[[], None] | None = None  # the audio keeper's
        #: Runs on the loop, once, with why, when the cleaner's module fails mid-run.
        self.on_cleaner_failed: Callable[[str], None] | None = None
        self._told_stalled = False
        self._zeros_since: float | None = None  # forwarded, and the device gave only zeros
        self._told_zeros = False
        #: The last turn a press began had nothing but zeros (muted), until sound comes.
        self.silent = False
        self._resampler: soxr.ResampleStream | None = None
        self._pending = bytearray()
        self._last_chunk_t = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pcm: CapturePcm | None = None
        self._reader: threading.Thread | None = None
        self._wake = -1  # an eventfd: forward(), finish() and close wake the reader
        self._wake_lock = threading.Lock()
        self._stopping = False
        self._failed = False  # the reader stopped on an error (the device went)
        self._clock = CardClock(RATE)
        self._frames = 0  # frames read since the device (re)started
        self._opened = 0.0
        self._last_read: float | None = None

    # -- life ------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Open the device and start reading it; chunks reach `loop` (default: the running one).

        Blocks while PortAudio lists the devices (to choose one, as the speaker does) and
        ALSA opens it: call it from the loop's thread at start-up, or from a worker thread
        with the loop given.
        """
        if self._reader is not None:
            return
        self._loop = loop or asyncio.get_running_loop()
        with PORTAUDIO_LOCK:
            pa = open_portaudio()
            try:
                info, fmt = choose_format(pa, self._find, "input", RATE, self._forced)
                self._find = found_again(pa, self._find, info, "input")
            finally:
                pa.terminate()
            self.device_name, self.device_rate, self.channels = str(info), fmt.rate, fmt.channels
            period = fmt.rate * self.chunk_ms // 1000
            # Ours from here: a start that fails past this closes it (`close_stream`). A
            # handle left open holds a hw: card, and every later open found it busy.
            pcm = self._pcm = CapturePcm(
                alsa_name(info.name), fmt.rate, fmt.channels, period, round(BUFFER_S * fmt.rate)
            )
        try:
            self._resampler = (
                soxr.ResampleStream(fmt.rate, RATE, 1, dtype="int16") if fmt.rate != RATE else None
            )
            self._pending.clear()
            self._last_chunk_t = 0.0
            self._told_delivering = self._stopping = self._failed = self._told_stalled = False
            self._told_zeros = self.silent = False
            self._until = None
            self._clock, self._frames = CardClock(fmt.rate), 0
            self._opened, self._last_read = time.monotonic(), None
            # No descriptor left for it (the unit's LimitNOFILE, the card's open took the last).
            self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._idle_read_ms = min(IDLE_READ_MS, pcm.buffer_frames * 1000 // fmt.rate // 3)
            reader = threading.Thread(
                target=self._read_loop, args=(pcm, self._wake), name=self.THREAD, daemon=True
            )
            reader.start()  # out of threads (TasksMax)
        except BaseException:  # closed, for the next try
            self.close_stream()
            raise
        self._reader = reader
        log.info(
            "capture started on %s (ALSA %s) at %d Hz, %d channel(s), %d ms periods",
            self.device_name,
            pcm.name,
            self.device_rate,
            self.channels,
            pcm.period_frames * 1000 // fmt.rate,
        )

    def close_stream(self) -> None:
        """Stop the reader and close the device (safe from a worker thread)."""
        reader, self._reader = self._reader, None
        if reader is not None:
            self._stopping = True
            self._nudge()
            reader.join()
        pcm, self._pcm = self._pcm, None
        if pcm is not None:
            pcm.close()
        with self._wake_lock:
            if self._wake >= 0:
                os.close(self._wake)
                self._wake = -1

    def stop(self) -> None:
        """Stop and close the device; whatever it still held is dropped."""
        self.close_stream()

    @property
    def running(self) -> bool:
        return self._reader is not None and not self._failed

    @property
    def busy(self) -> bool:
        """Never: the reader says itself when reads fail or stall (its reads do not block)."""
        return False

    def trouble(self, stale_s: float, grace_s: float = 0.0) -> str | None:
        """None while open and audio was read within `stale_s` of when it was due (before
        the first audio, within `grace_s` of opening). A pulled USB device fails the reads,
        or starves them."""
        if not self.running:
            return "the microphone is not reading"
        return self._starved(stale_s, grace_s)

    def _starved(self, stale_s: float, grace_s: float) -> str | None:
        """What `trouble` says of a reader that runs: how long no audio came, if too long."""
        now, last = time.monotonic(), self._last_read
        if last is None:
            waited = now - self._opened
            if waited < max(grace_s, stale_s):
                return None
            return f"no audio {waited:.1f} s after opening"
        due_s = self._idle_read_ms / 1000  # the longest the reader sleeps between reads
        return None if now - last < due_s + stale_s else f"no audio for {now - last:.1f} s"

    def _nudge(self) -> None:
        """Wake the reader now (it looks at what it is asked to do)."""
        with self._wake_lock:  # never a write to a number closed meanwhile
            if self._wake >= 0:
                os.eventfd_write(self._wake, 1)

    def forward(
        self,
        gate: QuietGate | None = None,
        *,
        since: float | None = None,
        preroll: bool = True,
        until: float | None = None,
    ) -> Chunks:
        """From now on chunks go to ``on_chunk`` (with a gate: unless the microphone is
        quiet); returns what was recorded from `since` (the button's edge, time.monotonic();
        default now) on, after the pre-roll before it (none without `preroll`), oldest first.
        What was recorded earlier never goes out, held or still waiting in the device.

        A turn over at `until` already (a press taken after its release) gets what was
        recorded up to the chunk holding that instant, held or still in the device, and the
        capture keeps holding the rest: a press taken as late after it reaches back to its
        own words."""
        now = time.monotonic()
        since = now if since is None else min(since, now)
        with self._ring_lock:
            self._from = since - (self._preroll_s if preroll else 0.0)
            held = [chunk for chunk in self._ring if self._in_turn(chunk[1])]
            if until is not None and (whole := self._held_whole(held, until)) is not None:
                return whole
            self._forwarding, self._gate, self._turn_ends = True, gate, until
            # Looked at from a press on (the pre-roll reaches back to its edge): someone is
            # there to talk. A hook's words may go to an empty room, where a microphone that
            # gates its own noise (a speakerphone's DSP) gives nothing but zeros too.
            self._zeros_since = now if preroll else None
            # Held back from now on only by a gate, and then the pre-roll or its lead-in only.
            lead_in = 0 if gate is None else gate.lead_in
            self._ring = deque(maxlen=max(self._preroll_chunks, lead_in))
        self._nudge()  # what the device holds follows at once, the turn's newest part
        return held

    def _held_whole(self, held: Chunks, until: float) -> Chunks | None:
        """Under the ring lock: of `held`, the turn up to the chunk holding `until`, the ring
        keeping only what came after it; None if that chunk is still to come."""
        end = next((i for i, (_, t) in enumerate(held) if t >= until), None)
        if end is None:
            return None
        last = held[end][1]
        self._ring = deque(
            (chunk for chunk in self._ring if chunk[1] > last), maxlen=self._held_chunks
        )
        return held[: end + 1]

    def _in_turn(self, t: float) -> bool:
        """A chunk recorded before the button's edge (its last sample at `t`) goes out only
        if it is within the pre-roll: between turns the device is read seldom, and what
        waits in it at the press (up to IDLE_READ_MS of it, the box's own voice at a
        barge-in) is not the person's turn."""
        return t > self._from

    def finish(self, until: float) -> None:
        """Hand over what is recorded up to `until` (time.monotonic()) as soon as it is
        read, the last chunk short: a released button's last words go out at once. What
        is read after that chunk is held at once, not when the loop gets to hold(): a
        press right after the release sends it as its pre-roll and first words."""
        with self._ring_lock:
            self._until = until
            if self._forwarding:
                self._turn_ends = until
        self._nudge()

    def listen_closely(self, closely: bool) -> None:
        """While the box speaks hands-free, a person may talk over it: their first words
        are read as they arrive even when the gate holds silence back."""
        self._closely = closely
        self._nudge()

    def mute(self, muted: bool) -> None:
        """While the box speaks with its microphone gated: what it hears is its own voice,
        never sent, so it is neither handed to the loop nor kept for later, and the device
        is read seldom. Unmuted, what was recorded before is dropped too (a read may bring
        the last PAUSED_READ_MS of it, a gate's ring the silence before the box spoke) and
        what follows goes on as before."""
        if not muted:
            self._heard_from = time.monotonic()
        with self._ring_lock:
            if self._forwarding:  # the ring's silence is from before the box spoke
                self._ring.clear()
            self._muted = muted
        self._nudge()

    def hold(self) -> None:
        """Keep chunks in the pre-roll ring again instead of handing them over."""
        with self._ring_lock:
            self._hold()

    def _hold(self) -> None:
        """`hold()`, the ring lock taken."""
        self._forwarding, self._gate, self._until, self._turn_ends = False, None, None, None
        self._zeros_since = None
        self._ring = deque(self._ring, maxlen=self._held_chunks)

    def _route(self, chunk: bytes, t: float) -> tuple[Chunks, bool]:
        """Under the ring lock: the chunks to hand over now, and whether the gate just paused."""
        if self._muted or t < self._heard_from:
            return [], False
        if self._forwarding and not self._in_turn(t):
            return [], False  # read after the press, recorded well before it
        if self._forwarding and self._turn_ends is not None and t >= self._turn_ends:
            self._hold()  # the turn's last chunk: what follows may be the next press's
            return [(chunk, t)], False
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

    def _read_loop(self, pcm: CapturePcm, wake: int) -> None:
        """The reader thread: wait, read what the device holds, deliver; until closed."""
        name_thread(self.THREAD)
        timer = select.poll()
        timer.register(wake, select.POLLIN)
        audio = select.poll()  # wakes as the device delivers
        audio.register(wake, select.POLLIN)
        pcm.register(audio)
        try:
            pcm.start()
            while not self._stopping:
                pace = self._pace()
                events = audio.poll(STALL_MS) if pace is None else timer.poll(pace)
                from_device = [event for event in events if event[0] != wake]
                if from_device:
                    pcm.acknowledge(from_device)
                if len(events) > len(from_device):  # woken by forward(), finish() or close
                    os.eventfd_read(wake)
                if not self._stopping:
                    self._read(pcm)
                    self._tell_if_starved()
        except AlsaError as exc:  # the device went: the keeper reopens it
            self._failed = True
            log.warning("the microphone stopped: %s", exc)
            self._tell_keeper()
        except RuntimeError as exc:
            self._failed = True
            loop = self._loop
            if loop is None or not loop.is_closed():  # not "nobody is listening any more"
                log.error("the microphone's reader stopped: %s: %s", type(exc).__name__, exc)
                self._tell_keeper()

    def _tell_if_starved(self) -> None:
        """Reads that bring nothing (a sink moved away, a starved device): the keeper is
        told once, when it starts."""
        starved = self._starved(STALE_S, START_GRACE_S) is not None
        if starved and not self._told_stalled:
            self._tell_keeper()
        self._told_stalled = starved

    def _tell_keeper(self) -> None:
        if self.on_change is not None:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody to tell
                self._call(self.on_change)

    def _pace(self) -> int | None:
        """How long to sleep before the next read (ms); None: read as audio arrives."""
        if self._until is not None:
            return FINISH_READ_MS
        if not self._forwarding:
            return self._idle_read_ms
        if self._muted:
            return PAUSED_READ_MS
        gate = self._gate
        paused = gate is not None and gate.paused and not self._closely
        return PAUSED_READ_MS if paused else None

    def _read(self, pcm: CapturePcm) -> None:
        """Read everything the device holds and deliver it; an overrun is counted."""
        try:
            data, left = pcm.read()
        except AlsaError as exc:
            if exc.errno not in (errno.EPIPE, errno.ESTRPIPE):
                raise
            pcm.recover(exc)
            if self._frames:
                # It delivered until the reader fell behind (starved for longer than the
                # card's buffer: a throttled Pi, apt beside it): the card is there, and a
                # keeper told it was silent that long would close both devices mid-reply.
                # One that overruns again with nothing read in between is not stamped.
                self._last_read = time.monotonic()
            self._clock.restart()
            self._frames = 0
            self._overflowed()
            return
        if not data:
            return
        now = self._last_read = time.monotonic()
        self._look_for_sound(data, now)
        self._frames += len(data) // 2 // self.channels
        self._deliver(data, self._clock.when(self._frames, self._frames + left, now))

    def _look_for_sound(self, data: bytes, now: float) -> None:
        """In a turn, a device that gave nothing but zeros on the channel the box hands on
        for DIGITAL_SILENCE_S is said in the journal, once an open (the service hears
        nothing, and the box answers nothing), and is `silent` until sound comes (what
        `ctl status` and the doctor say while the service holds the microphone)."""
        since = self._zeros_since
        if since is None:
            return
        # The first channel only: what the box hands on (another's sound is not heard).
        heard = np.frombuffer(data, dtype=np.int16)[:: self.channels]
        if heard.any():
            self._zeros_since = None  # sound: this turn's microphone works
            self.silent = False
        elif now - since >= DIGITAL_SILENCE_S and not self.silent:
            self.silent = True
            if not self._told_zeros:
                self._told_zeros = True
                log.warning(
                    "the microphone %s records only digital silence: muted (alsamixer, F4, "
                    "or its own mute button), or its driver lost its input",
                    self.device_name,
                    extra={"LIVE_DEVICE": "microphone", "LIVE_ERROR": "digital silence"},
                )

    def _overflowed(self) -> None:
        """The device dropped audio (the reader fell behind): counted, reported, not fatal."""
        self.overflows += 1
        if self.cleaner is not None:
            self.cleaner.resync()
        if self.on_overflow is not None:
            self._call(self.on_overflow, self.overflows)

    def _call(self, callback: Callable[..., None], *args: object) -> None:
        loop = self._loop
        assert loop is not None
        loop.call_soon_threadsafe(callback, *args)

    def _deliver(self, data: bytes, recorded: float) -> None:
        """Convert audio read from the device (its newest sample recorded at `recorded`),
        cut it into chunks and hand them over, or keep them in the ring."""
        cleaner = self.cleaner
        if not self._told_delivering:
            self._told_delivering = True
            self._call(self.delivering.set)
        if self.channels == 1 and self._resampler is None and cleaner is None:
            self._pending += data  # already what the service takes
        else:
            samples = np.frombuffer(data, dtype=np.int16)
            if self.channels > 1:  # the first microphone of an interleaved frame
                samples = samples[:: self.channels]
            if self._resampler is not None:
                samples = self._resampler.resample_chunk(samples)
                # What it still holds was recorded before the newest sample read: the
                # last sample out was recorded that much earlier (a release's last words).
                recorded -= self._resampler.delay() / RATE
            if cleaner is not None:
                first = recorded - samples.size / RATE
                samples = cleaner.process(samples, first, active=self._forwarding)
                if cleaner.failed and self.on_cleaner_failed is not None:
                    self._call(self.on_cleaner_failed, cleaner.failed)
                    self.on_cleaner_failed = None  # told once
            self._pending += samples.tobytes()
        behind = cleaner.behind_s if cleaner is not None else 0.0
        # A cleaner that just started hands over a chunk less what it holds back, one that
        # stopped a chunk and what it held; sent whole chunks only, every later chunk
        # would wait a period for its last samples.
        first = len(self._pending) % self.chunk_bytes if cleaner and cleaner.switched else 0
        until = self._until
        rest = until is not None and recorded - behind >= until  # the turn's end goes out now
        if rest:
            self._until = None
        for size in self._cuts(first, rest):
            chunk = bytes(self._pending[:size])
            del self._pending[:size]
            # Samples still pending were recorded after this chunk's last one. A late
            # read bunches its audio: the estimate never runs backwards.
            t = max(recorded - behind - len(self._pending) / 2 / RATE, self._last_chunk_t)
            self._last_chunk_t = t
            with self._ring_lock:
                handed, paused = self._route(chunk, t)
            for piece, at in handed:
                self._call(self.on_chunk, piece, at)
            if paused and self.on_pause is not None:
                self._call(self.on_pause)

    def _cuts(self, first: int, rest: bool) -> list[int]:
        """The sizes to cut from what is pending: `first` bytes if not 0, whole chunks,
        and with `rest` whatever is left."""
        left, sizes = len(self._pending), []
        if first:
            sizes.append(first)
            left -= first
        whole, tail = divmod(left, self.chunk_bytes)
        sizes += [self.chunk_bytes] * whole
        if rest and tail:
            sizes.append(tail)
        return sizes
