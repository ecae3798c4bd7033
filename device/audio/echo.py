"""Echo cancellation: the box's own voice taken back out of its microphone.

A voice box has its speaker a few centimetres from its microphone. WebRTC's
audio processing module (AEC3, its noise suppressor and high-pass filter, the
ones every browser call uses; bound by `pywebrtc-audio`) cleans the 16 kHz
microphone stream in 10 ms frames on the capture's own thread.

The reference it subtracts is exactly what the speaker played: the speaker's
writer thread hands each piece (after volume) to `FarEnd` as it gives it to
PortAudio, placed on the writer's own timeline of when the device plays it
(counted in samples from the start of each run of the stream). For each
microphone frame, placed in time by when the sound card recorded it, the
canceller takes the reference a little later (`LEAD_S`): AEC3 cannot cancel an
echo that arrives before its reference, so timing errors must all fall on the
safe side; its own delay estimator finds the rest (the acoustic path, and
whatever lies between handing a sample to PortAudio and its sound).

Each reply starts the speaker's stream again, and its echo comes back a few ms from
where the last one's did: the canceller finds where in the reply's first moments and
moves the reference by as much, so that the module goes on with what it learned of the
room (started afresh, it is guarded for two seconds, and nobody could talk over them).

The binding has wheels for 64-bit Linux (x86_64, aarch64); where it is missing
(32-bit Raspberry Pi OS) `unavailable()` says why and the box gates instead.
"""

from __future__ import annotations

import importlib
import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr

from device.config import MicDuringPlayback
from device.live.wire import MIC_RATE

RATE = MIC_RATE
FRAME = RATE // 100  # the module works in 10 ms frames
#: How much later than each microphone frame the reference is taken: room for a
#: millisecond or two of error in the stamps. The speaker's writer hands PortAudio its
#: audio 50-100 ms before it plays, so the reference is always there to take.
LEAD_S = 0.005
#: What each stage holds back (measured: the peak of the cross-correlation of its input
#: and output). AEC3 works in 4 ms blocks behind a frame blocker; the noise suppressor
#: overlaps its analysis windows.
ECHO_LATENCY_S = 128 / RATE
NOISE_LATENCY_S = 96 / RATE
#: A capture stamp is the sound card's own (its sample count, `CardClock`): a late read
#: does not move it. Off by more than this from the count here, input was lost.
CAPTURE_JUMP_S = 0.02
#: A piece of the speaker's that starts further than this from where the last one ended
#: is a new run of its stream (or the device ran dry in between): the echo may have moved.
FOLLOW_ON_S = 0.001
#: 16 kHz samples read beyond each end of the reference, for the resampler's filter.
MARGIN = RATE // 200
#: For the module's first this long of the box speaking (after a start or an xrun), what is
#: left is lowered this much (a reference louder than GUARD_FLOOR, in int16 RMS, is the
#: box speaking).
GUARD_S = 1.0
GUARD_DB = 20.0
GUARD_GAIN = 10 ** (-GUARD_DB / 20)
GUARD_FLOOR = 32768 * 10 ** (-50 / 20)
#: For the next second of the box speaking, a 10 ms frame the module took this much or
#: more out of is what it left of the echo, and is lowered GUARD_DB too. Measured on the
#: loopback: a module still converging 1.3-1.5 s into a reply let frames through 14-18 dB
#: under the microphone (louder than the service's most sensitive threshold), where one
#: that has converged takes 25-50 dB out. Not for longer: a person across the room, more
#: than RESIDUE_DB under the box's own voice at its microphone, looks the same by level,
#: and once the module has converged it is them.
RESIDUE_S = 1.0
RESIDUE_DB = 12.0
RESIDUE_POWER = 10 ** (RESIDUE_DB / 10)
#: And whenever the box speaks, a 10 ms frame the module hands back this much louder than
#: the microphone recorded it is lowered GUARD_DB: the module added it (its estimate of an
#: echo, taken out where none was). A person's voice cannot come out that much louder: it
#: would take their voice and the echo cancelling each other in the air to a quarter of
#: the person's power over a whole frame (as loud as each other, nearly opposite in phase).
#: Measured on the loopback: at a word after a pause in a reply, 1.4 s in, a frame 11 dB
#: louder than the microphone's, over the service's most sensitive threshold.
ADDED_DB = 6.0
ADDED_POWER = 10 ** (ADDED_DB / 10)
#: A word after a pause in a reply: AEC3, long converged, now and then lets its first
#: 50 ms through as recorded (measured: 4 of 36 replies on the direct path, a frame up to
#: 9 dB over the service's most sensitive threshold; its own estimate of the echo path
#: unchanged, cancelling 60 dB again 20 ms later). So for ONSET_S from the box's voice
#: starting again after PAUSE_S of quiet in the reference, what comes out is lowered
#: GUARD_DB too: 6-7 % of the frames while the box speaks, all four caught offline.
PAUSE_S = 0.1
ONSET_S = 0.1
#: Each reply is a new run of the speaker's stream, and its echo comes back a few ms from
#: where the last run's did (measured on the loopback: the same to the sample all through a
#: run, up to 5 ms apart from one run to the next). Starting the module afresh for it put
#: every reply's first two seconds under the guards (nobody could talk over them), and the
#: module that goes on as it was lets the moved echo through (3 of 12 replies interrupted
#: themselves). So the canceller finds how far the echo moved in the first ALIGN_S of the
#: reply's echo (the microphone muted meanwhile), moves the reference by as much, primes
#: the module with those moments, and goes on with what it has learned. Replayed offline
#: over 18 recorded replies, direct and through a room: nothing left after ALIGN_S loud
#: enough for the service's voice detector (0.05 s was too short to tell the delay).
ALIGN_S = 0.2
#: How far a new run's echo may have moved and still be followed (farther, or not found:
#: the module starts afresh, guarded, as for an xrun).
ALIGN_REACH_S = 0.02
#: The longest echo delay measured (the reference to its echo in the microphone): a box
#: whose echo comes later starts the module afresh each reply.
ALIGN_MAX_S = 0.1
#: How far the echo's delay must stand out of the cross-correlation, over its RMS
#: (measured: 12-39 for the box's voice alone; a person talking over it blurs it).
ALIGN_CLARITY = 8.0
#: The shortest delay learned as the echo's (samples): half of LEAD_S. An echo found
#: sooner came with its reference, not after it, where AEC3 cannot take it out; later
#: runs followed to it would be put there too. Seen on the loopback under load: a
#: press's earcon whose echo came 15 ms earlier than the replies' did, learned as
#: delay 0, put the first reply's echo there, and the box interrupted itself (1 run in
#: 4). Not learned: the next run is learned afresh.
ALIGN_MIN = round(LEAD_S * RATE / 2)
#: While the box speaks, where the module hears its echo is looked at again this often
#: (one ALIGN_S window a second: the cross-correlation costs an eighth of what AEC3 does
#: over the same window here).
KEEP_S = 1.0
#: What the module hears of the moments before it starts again (two frames: more than it
#: holds back), so that it starts where the unprocessed audio stopped.
PRIME = 2 * FRAME
#: An echo canceller rests once the speaker has played nothing for this long (the room's
#: reverberation has died away): there is no echo to take out, and AEC3 costs 0.7 s of
#: CPU a minute here for nothing. The next reply wakes it, and its echo is found again.
RESTING_S = 1.0
#: Raw input kept beyond each block: what the module may still hold back when it stops
#: (a partial frame, its own delay, what it leaves out after starting), and its primer.
HISTORY = PRIME + 2 * FRAME + 256
BINDING = "pywebrtc_audio"


def unavailable() -> str | None:
    """Why echo cancellation cannot run on this box, or None when it can: the binding
    imports, and builds a processor that takes a frame (a wheel that imports but cannot
    build one must fall back as a missing one does, not stop the daemon at its start)."""
    try:
        module = importlib.import_module(BINDING)
    except ImportError as exc:
        return f"pywebrtc-audio is not installed ({exc}); it has no wheel for this platform"
    except Exception as exc:  # a broken install: its import itself fails
        return f"pywebrtc-audio does not load: {type(exc).__name__}: {exc}"
    if not hasattr(module, "AudioProcessor"):
        return "pywebrtc-audio here is a placeholder release without the audio processor"
    try:
        silence = np.zeros(FRAME, dtype=np.int16)
        module.AudioProcessor(
            sample_rate=RATE, echo_cancellation=True, noise_suppression=True,
            high_pass_filter=True,
        ).process(silence, silence)
    except Exception as exc:
        return f"pywebrtc-audio cannot build its audio processor: {type(exc).__name__}: {exc}"
    return None


@dataclass(frozen=True)
class Plan:
    """What the microphone goes through on this box, from the settings and the platform."""

    mic_during_playback: MicDuringPlayback  # hands-free, in force: "cancel" where it can run
    echo: bool  # cancel the speaker's echo (hands-free)
    noise: bool  # suppress steady noise
    missing: str | None = None  # why a setting that wanted the module cannot have it
    fell_back: bool = False  # that setting was the hands-free "cancel" (else noise suppression)


def plan(
    mic_during_playback: MicDuringPlayback, noise_suppression: bool, hands_free: bool
) -> Plan:
    """Decide once at start what runs. Without the module "cancel" falls back to "gate"
    (the speaker is then never heard by the service) and noise suppression is off; a
    push-to-talk box, which never speaks with its microphone open, needs it only for
    noise suppression asked for."""
    cancel = mic_during_playback == "cancel"
    missing = unavailable() if (cancel and hands_free) or noise_suppression else None
    if missing is not None:
        gate = "gate" if cancel else mic_during_playback
        return Plan(gate, False, False, missing, fell_back=cancel and hands_free)
    return Plan(mic_during_playback, hands_free and cancel, noise_suppression)


class SampleClock:
    """The times of a stream's samples, continuous from one block to the next.

    Within a run of the stream its samples are placed by their count from the first
    one, as the sound card clocks them: timestamps taken as the audio is read jitter
    with thread scheduling by a millisecond or more (PortAudio's, through PulseAudio's
    ALSA plugin, also drifted from the count by up to a millisecond a second), either of
    which the echo canceller takes for an echo that moved (following them over ten
    seconds, it let echo through every few replies). The clock starts again from the reported time
    only when the stream really paused or skipped: its times off by more than
    `jump_s`, or an xrun (`resync`).
    """

    def __init__(self, rate: int, jump_s: float) -> None:
        self.rate = rate
        self.jump_s = jump_s
        self._next: float | None = None  # the time of the sample after the last block
        self.jumped = False  # the last block did not follow on from the one before

    def resync(self) -> None:
        """The stream skipped (an xrun): believe the next reported time."""
        self._next = None

    def place(self, t_first: float, n: int) -> float:
        """The time of the first of `n` samples that the stream put at `t_first`."""
        expected = self._next
        self.jumped = expected is None or abs(t_first - expected) > self.jump_s
        start = t_first if self.jumped or expected is None else expected
        self._next = start + n / self.rate
        return start


class FarEnd:
    """What the speaker played, on a timeline of when the device plays it.

    The speaker's writer thread hands over each piece as it gives it to PortAudio,
    with the time its first sample plays: where the last piece ends, or, at a new
    run of the stream (or after the device ran dry), the moment of the write. A
    barge-in aborts the stream and drops what the device held: `cut` makes that
    silence. Kept at the speaker's rate and resampled to 16 kHz when the capture
    thread reads it; one short lock between the two. Times where nothing played
    read as silence.
    """

    def __init__(self, history_s: float = 1.0) -> None:
        self._history_s = history_s
        self._lock = threading.Lock()
        self._rate = 0
        self._ring = np.zeros(0, dtype=np.int16)
        self._origin = 0.0  # the time of sample index 0
        self._end = 0  # one past the newest index written
        #: Set when the speaker's timeline did not follow on within a run (the device ran
        #: dry), a reply was cut or the speaker reopened at another rate; cleared by the
        #: canceller that starts afresh because of it.
        self.moved = False
        #: Set when the stream stopped and started again (the next reply): its echo comes
        #: back a few ms from where the last run's did; cleared by the canceller that
        #: finds where.
        self.new_run = False

    def played(
        self, samples: np.ndarray, rate: int, t_first: float, new_run: bool = False
    ) -> None:
        """`samples` (mono int16 at `rate`) play from `t_first` on; `new_run`: the first
        piece of a new run of the stream (else one that does not follow on is a device
        that ran dry: an xrun)."""
        with self._lock:
            if rate != self._rate:  # a speaker reopened at another rate: the echo moved
                self.moved = self.moved or bool(self._rate)
                self._rate, self._origin, self._end = rate, t_first, 0
                self._ring = np.zeros(round(self._history_s * rate), dtype=np.int16)
            first = round((t_first - self._origin) * rate)
            if abs(first - self._end) > FOLLOW_ON_S * rate:
                self.moved = self.moved or not new_run
                self.new_run = self.new_run or new_run
            size = self._ring.size
            if first > self._end:  # nothing played in between: silence
                self._put(max(self._end, first - size), np.zeros(min(first - self._end, size)))
            lo = max(first, self._end - size, first + samples.size - size)
            if lo < first + samples.size:
                self._put(lo, samples[lo - first :])
            self._end = first + samples.size

    def ran_dry(self) -> None:
        """The device ran out while audio waited for it (PortAudio's output underflow on a
        card: its clock and the writer's count disagreed): what it played since sounds
        later than placed, by a silence nobody measures. The echo moved."""
        with self._lock:
            self.moved = True

    def quiet_since(self, t: float) -> bool:
        """Nothing handed to the speaker plays at or after `t`."""
        with self._lock:
            return not self._rate or self._origin + self._end / self._rate <= t

    def cut(self, t: float) -> None:
        """A reply was cut short (barge-in): nothing plays from `t` on, whatever the device
        had been handed. Whether a person spoke or the box heard itself, the canceller
        starts afresh: if its own voice got through, what the canceller had learned let it,
        and each answer that followed was cut at its first words in turn (seen on branch
        echo: a loop of self-interruptions the box never left); if a person spoke, the box
        is quiet now and a fresh start costs nothing."""
        with self._lock:
            if self._rate:
                self._end = min(self._end, max(0, round((t - self._origin) * self._rate)))
            self.moved = True

    def _put(self, index: int, data: np.ndarray) -> None:
        """Write at an absolute index (wrapping round the ring); the lock is held."""
        size = self._ring.size
        at = index % size
        head = min(data.size, size - at)
        self._ring[at : at + head] = data[:head]
        self._ring[: data.size - head] = data[head:]

    def heard(self, t_first: float, n: int) -> np.ndarray:
        """The `n` samples at 16 kHz heard from `t_first` on; silence where nothing played."""
        with self._lock:
            rate = self._rate
            if not rate:
                return np.zeros(n, dtype=np.int16)
            # A stretch of the speaker's samples that maps onto the 16 kHz grid exactly,
            # with a margin each side for the resampler's filter to settle in.
            step = RATE // math.gcd(RATE, rate)
            want = round((t_first - self._origin) * RATE)
            lo = (want - MARGIN) // step * step
            hi = -(-(want + n + MARGIN) // step) * step
            first, last = lo * rate // RATE, hi * rate // RATE
            window = np.zeros(last - first, dtype=np.int16)
            known_lo, known_hi = max(first, self._end - self._ring.size, 0), min(last, self._end)
            if known_lo < known_hi:
                size = self._ring.size
                at = known_lo % size
                count = known_hi - known_lo
                head = min(count, size - at)
                window[known_lo - first : known_lo - first + head] = self._ring[at : at + head]
                window[known_lo - first + head : known_hi - first] = self._ring[: count - head]
        if rate != RATE:
            window = soxr.resample(window, rate, RATE)
        return window[want - lo : want - lo + n]


def lower_residue(out: np.ndarray, near: np.ndarray, converging: bool) -> np.ndarray:
    """`out` with each 10 ms frame `ADDED_DB` or more over the same frame of `near`, and
    while the module is `converging` each one `RESIDUE_DB` or more under it, lowered by
    GUARD_DB: what the module added, and what it left of the echo; not a person's voice."""
    # The microphone as the module hears it past its high-pass filter: without its DC
    # offset (a cheap USB microphone's few hundred), which no output has.
    out_power, near_power = _frame_power(out), _frame_power(near, centred=True)
    residue = out_power >= near_power * ADDED_POWER
    if converging:
        residue |= out_power * RESIDUE_POWER <= near_power
    gain = np.where(residue, GUARD_GAIN, 1.0).repeat(FRAME)[: out.size]
    return (out * gain).astype(np.int16)


def echo_delay(near: np.ndarray, far: np.ndarray, around: int | None = None) -> int | None:
    """How many samples the microphone's `near` lags the reference `far` by, from their
    cross-correlation weighted by phase alone (a sharp peak for speech, whatever its
    spectrum): within ALIGN_REACH_S of `around` if given, else from ALIGN_MIN up to
    ALIGN_MAX_S; None when no lag stands out (a person talking over it, too little of the
    box's voice, a silent microphone) or, learning afresh, when it is sooner than that."""
    size = 1 << (near.size + far.size - 1).bit_length()
    cross = np.fft.rfft(near.astype(np.float64), size) * np.conj(
        np.fft.rfft(far.astype(np.float64), size)
    )
    lags = np.fft.irfft(cross / (np.abs(cross) + 1e-9), size)[: round(ALIGN_MAX_S * RATE)]
    lo, hi = 0, lags.size
    if around is not None:
        reach = round(ALIGN_REACH_S * RATE)
        lo, hi = max(0, around - reach), min(lags.size, around + reach + 1)
    if lo >= hi:
        return None
    best = lo + int(np.argmax(lags[lo:hi]))
    spread = float(np.sqrt(np.mean(lags**2)))  # 0: one side silent, nothing to find
    if not spread or lags[best] < ALIGN_CLARITY * spread:
        return None
    return best if around is not None or best >= ALIGN_MIN else None


def _level(samples: np.ndarray) -> float:
    """The RMS of a block of int16 samples, in int16 units (as GUARD_FLOOR is)."""
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def _frame_power(samples: np.ndarray, centred: bool = False) -> np.ndarray:
    """The energy of each 10 ms frame (the last one as far as it goes); `centred`: about
    its own mean."""
    frames = -(-samples.size // FRAME)
    padded = np.zeros(frames * FRAME)
    padded[: samples.size] = samples
    framed = padded.reshape(frames, FRAME)
    if centred:
        framed = framed - framed.mean(axis=1, keepdims=True)
    return np.sum(framed**2, axis=1)


def webrtc_module(*, echo: bool, noise: bool) -> Any:
    """WebRTC's audio processing as the canceller runs it (the rig replays recordings of
    its calls through one built the same way)."""
    binding: Any = importlib.import_module(BINDING)
    return binding.AudioProcessor(
        sample_rate=RATE, echo_cancellation=echo, noise_suppression=noise, high_pass_filter=True
    )


class Canceller:
    """Cleans the microphone's 16 kHz stream: echo (with a `FarEnd`), noise, rumble.

    Used from the capture's reader thread only, which hands it everything recorded
    and says whether the audio is wanted cleaned (`active`): it runs only while the
    microphone goes to the service, and an idle box pays nothing for it. An echo
    canceller alone also rests while the speaker has been quiet for RESTING_S. When it
    starts again it is primed with the moments just before, and its output joins what
    went out unprocessed without a gap or a repeat; when it stops, what it held back
    goes on as recorded.

    Whole 10 ms frames go through the module; a remainder waits for the next block, so a
    device period that is a whole number of 10 ms (as the appliance's chunks are) adds
    nothing but the module's own `latency_s`.
    """

    def __init__(self, far: FarEnd | None, *, noise: bool = False) -> None:
        """`far`: cancel the echo of what it heard; `noise`: suppress steady noise too."""
        self._far = far
        self._apm = webrtc_module(echo=far is not None, noise=noise)
        self.latency_s = (ECHO_LATENCY_S if far is not None else 0.0) + (
            NOISE_LATENCY_S if noise else 0.0
        )
        self._clock = SampleClock(RATE, CAPTURE_JUMP_S)
        self._held = np.zeros(0, dtype=np.int16)  # less than a frame, waiting for the rest
        self._history = np.zeros(0, dtype=np.int16)  # the newest raw input
        self._seen = 0  # samples handed in
        self._passed = 0  # of them, how many went out (cleaned or as they were)
        self._active = False
        self._drop = 0  # output samples still to leave out after starting
        self._restart = False  # an overrun: start the module afresh
        self._refind = False  # an overrun while stopped: find the echo again on waking
        self._rests = far is not None and not noise  # an echo canceller alone
        #: The last process() call started or stopped the module: what it handed over
        #: ends where a read ended, not on a whole frame.
        self.switched = False
        self._converging_s = GUARD_S + RESIDUE_S  # of the box speaking, before the guard lifts
        self._far_level = 0.0  # the reference's RMS in the block before (int16 units)
        self._quiet_s = 0.0  # how long the reference has been quiet
        self._onset_s = 0.0  # how much longer a word after a pause is lowered
        self._delay: int | None = None  # the echo's delay (samples) where the module hears it
        self._shift = 0  # samples the reference is read earlier by: where this run's echo is
        self._finding = False  # a new run's echo is being found: the microphone muted
        #: The blocks (microphone, reference) from the first with the box's voice in it,
        #: while its echo's delay is learned, kept or found, and when the first was recorded.
        self._window: list[tuple[np.ndarray, np.ndarray]] = []
        self._window_start = 0.0
        self._kept_at = 0.0  # when the last window that learned or kept the delay began
        #: Why the module stopped working mid-run (it raised): from then on the audio goes
        #: on as recorded, never stopping the microphone's reader (whose reopen would only
        #: fail again at the next word: a box deaf for good). The capture says so.
        self.failed: str | None = None

    def resync(self) -> None:
        """The microphone overran: input was lost, what comes next was recorded later.
        Running, the module starts afresh (what it heard no longer joins what comes next).
        Stopped or resting it heard none of it: its echo is found again when it next
        runs, as after any pause (started afresh, it put the next reply's first two
        seconds under the guards, and a person talking over them was lowered 20 dB)."""
        self._clock.resync()
        if self._active:
            self._restart = True
        else:
            self._refind = True

    def _follow_the_echo(self) -> None:
        """An xrun on either side, a reply cut short or a speaker reopened moves the echo
        in time by an amount nobody reports exactly. AEC3 finds the new delay sooner from
        its initial state than its converged filter follows it, and it is guarded again
        while it converges (in the simulation, of 16 underruns of 20 and 60 ms: 10 let
        echo through louder than the server's voice threshold as things were, 2 after a
        restart, none with the guard). A new run of the speaker's stream (the next reply)
        moves it a few ms: that is found, and followed (`_aligned`)."""
        far = self._far
        if self._restart or (far is not None and far.moved):
            self._start_afresh()
        elif far is not None and (far.new_run or self._refind):
            far.new_run = self._refind = False
            if self._delay is None:  # where its echo was is not known: nothing to follow
                self._start_afresh()
            else:
                self._finding = True
                self._window.clear()

    def _start_afresh(self) -> None:
        """The module forgets the room, and is guarded while it learns it again."""
        self._apm.reset()
        self._restart = self._refind = False
        self._converging_s, self._far_level = GUARD_S + RESIDUE_S, 0.0
        self._delay, self._shift, self._finding = None, 0, False
        self._window.clear()
        if self._far is not None:
            self._far.moved = self._far.new_run = False

    def _aligned(self, near: np.ndarray, far: np.ndarray, start: float) -> bool:
        """Learn the echo's delay (after a fresh start, the module working on) and keep
        it where the module hears the echo now, or find where a new run's echo moved to:
        True while the microphone is muted for that. Once found, the reference moves by as
        much and the module hears those moments again, in step: it goes on with its echo
        where it was.

        Kept, because an echo may move within a run with nobody saying so (a sound
        server's own underrun: PulseAudio's ALSA plugin reports none) and the module's
        filter follows it there; the next run's echo, back where the last one started,
        found against where it was first learned, was read 5 ms off the module's filter
        (on the loopback under load: the box interrupted itself in its second reply)."""
        if not self._window:
            if self._delay is not None and not self._finding and start < self._kept_at + KEEP_S:
                return False  # looked at a moment ago (asked first: it costs nothing)
            if _level(far) < GUARD_FLOOR:
                return False  # the box's voice is not in the reference yet
            self._window_start = start
        self._window.append((near.copy(), far))
        if sum(n.size for n, _ in self._window) < ALIGN_S * RATE:
            return self._finding
        nears = np.concatenate([n for n, _ in self._window])
        fars = np.concatenate([f for _, f in self._window])
        self._window.clear()
        if not self._finding:
            learned = echo_delay(nears, fars)
            if learned is not None:
                self._delay = learned
            self._kept_at = self._window_start
            return False
        self._finding = False
        found = echo_delay(nears, fars, around=self._delay)
        if found is None or self._far is None or self._delay is None:
            self._start_afresh()
        else:
            self._shift += found - self._delay
            began = self._reference_time(self._window_start)
            self._apm.process(nears, self._far.heard(began, nears.size))
        return True

    def _reference_time(self, start: float) -> float:
        """Where the reference for microphone samples recorded from `start` on is read."""
        return start + LEAD_S - self._shift / RATE

    def _guard(self, out: np.ndarray, near: np.ndarray, far: np.ndarray | None) -> np.ndarray:
        """While the box speaks, lower what is left of its echo (`out`, cleaned from the
        microphone's `near`): all of it during the module's first `GUARD_S` of hearing
        it (from the start, and after an xrun), then for `RESIDUE_S` the frames it took
        `RESIDUE_DB` or more out of, and at any time the frames it made louder. A module
        converging lets single frames through, and the service takes one loud frame for
        speech: the box would interrupt itself."""
        if far is None:
            return out
        onset = self._onsets(far)[far.size - out.size :]
        level = _level(far)
        speaking = max(level, self._far_level)  # this block or the one before: the echo lags
        self._far_level = level
        if speaking < GUARD_FLOOR:
            return out
        converging = self._converging_s > 0  # for all of this block
        self._converging_s = max(0.0, self._converging_s - out.size / RATE)
        if self._converging_s >= RESIDUE_S:
            return (out * GUARD_GAIN).astype(np.int16)
        left = lower_residue(out, near, converging)
        return np.where(onset, (left * GUARD_GAIN).astype(np.int16), left)

    def _onsets(self, far: np.ndarray) -> np.ndarray:
        """For each sample of the block, whether it is within ONSET_S of the box's voice
        starting again after a pause (by the reference's 10 ms frames)."""
        step = FRAME / RATE
        loud = _frame_power(far) >= GUARD_FLOOR**2 * FRAME
        lowered = np.zeros(loud.size, dtype=bool)
        for i, frame_loud in enumerate(loud):
            if frame_loud and self._quiet_s >= PAUSE_S:
                self._onset_s = ONSET_S
            self._quiet_s = 0.0 if frame_loud else self._quiet_s + step
            lowered[i] = self._onset_s > 0
            self._onset_s = max(0.0, self._onset_s - step)
        return lowered.repeat(FRAME)[: far.size]

    @property
    def behind_s(self) -> float:
        """How long before the newest sample handed in the newest one handed out was
        recorded: what waits for a whole frame, and what the module holds back."""
        return (self._seen - self._passed) / RATE

    def process(self, samples: np.ndarray, t_first: float, active: bool = True) -> np.ndarray:
        """`samples` (int16) recorded from `t_first` on; returns what can go on now:
        the frames cleaned so far, or `samples` as they are when not `active`."""
        self._seen += samples.size
        self._history = np.concatenate([self._history, samples])[-(HISTORY + samples.size) :]
        resting = self._rests and self._far is not None and self._far.quiet_since(
            t_first + samples.size / RATE - RESTING_S
        )
        running = active and not resting and self.failed is None
        out = self._cleaned(samples, t_first) if running else self._raw()
        self._passed += out.size
        return out

    def _cleaned(self, samples: np.ndarray, t_first: float) -> np.ndarray:
        """Running, unless the module fails: then, for good, what it had not handed out
        yet as it was recorded."""
        try:
            return self._process(samples, t_first)
        except Exception as exc:  # the native module: whatever it raises
            self.failed = f"pywebrtc-audio failed: {type(exc).__name__}: {exc}"
        return self._raw()

    def _raw(self) -> np.ndarray:
        """Stopped: what it had not handed out yet, as it was recorded."""
        self.switched, self._active = self._active, False
        self._held = self._held[:0]
        return self._history[self._history.size - (self._seen - self._passed) :]

    def _process(self, samples: np.ndarray, t_first: float) -> np.ndarray:
        """Running: the frames cleaned so far."""
        starting = self.switched = not self._active
        if starting:  # the module first hears what went out unprocessed
            self._active = True
            primer = self._history[: self._history.size - samples.size][-PRIME:]
            samples = np.concatenate([primer, samples])
            t_first -= primer.size / RATE
            self._drop = primer.size + round(self.latency_s * RATE)
            self._clock.resync()
            self._window.clear()  # what it held is from before it stopped
        start = self._clock.place(t_first, samples.size) - self._held.size / RATE
        if self._clock.jumped and not starting:
            self._restart = True  # input was lost: the echo moved
        data = np.concatenate([self._held, samples]) if self._held.size else samples
        whole = data.size - data.size % FRAME
        self._held = data[whole:].copy()
        if not whole:
            return data[:0]
        # Laid out sample after sample: the binding reads the buffer as it is, whatever the
        # strides (the first channel of a stereo card came through interleaved with the other).
        near = np.ascontiguousarray(data[:whole])
        self._follow_the_echo()
        far = None if self._far is None else self._far.heard(self._reference_time(start), whole)
        if far is not None and self._aligned(near, far, start):
            # Muted, its pauses are timed still: the module heard the word that began here,
            # and its first moments come out lowered only after a real pause.
            self._onsets(far)
            return self._dropped(np.zeros_like(near))
        out = self._dropped(self._apm.process(near, far))
        # What the microphone recorded for those same samples (the output is in step).
        recorded = self._history[self._history.size - (self._seen - self._passed) :]
        return self._guard(out, recorded[: out.size], far)

    def _dropped(self, out: np.ndarray) -> np.ndarray:
        """`out` less what is still to be left out since starting: the primer the module
        heard first, and as much as it holds back."""
        skip = min(self._drop, out.size)
        self._drop -= skip
        return out[skip:]
