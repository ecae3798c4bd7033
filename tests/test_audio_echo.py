"""The echo canceller on synthetic signals: the box's voice goes, a person's voice stays.

The speaker and the microphone are simulated the way the appliance drives them: the
speaker's writer hands PortAudio 50 ms pieces at 24 kHz 100 ms before they play, on
its own sample count; the capture callback hands 40 ms blocks at 16 kHz recorded a
latency earlier, with timestamps that jitter as thread scheduling does.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import pytest
import soxr

from device.audio import echo, pcm
from device.audio.echo import RATE, Canceller, FarEnd, SampleClock
from rig.server.vad import DEFAULT_THRESHOLD
from rig.speech import said

SPEAKER_RATE = 24000
T0 = 1000.0  # the simulated monotonic time of sample 0
PIECE_S = 0.05  # what the speaker's writer hands PortAudio at a time...
AHEAD_S = 0.1  # ...this long before it plays
#: The local server's voice detector: a 20 ms frame louder than this is speech.
VOICE_DBFS = 20 * np.log10(DEFAULT_THRESHOLD / 32768)
REPLY = (
    "The weather tomorrow will be sunny with a light breeze from the west, and temperatures "
    "will rise to around twenty two degrees in the afternoon. In the evening clouds will "
    "gather over the hills and there may be a short shower before midnight."
)


@cache
def spoken(text: str, dbfs: float) -> np.ndarray:
    """`text` said at that loudness (espeak-ng takes a moment: once per test session)."""
    return said(text, dbfs)


def reply(seconds: float) -> np.ndarray:
    """The box's voice: a long answer at -20 dBFS, as loud as the Live API's replies."""
    return spoken(REPLY, -20.0)[: round(seconds * RATE)]


def frames_dbfs(samples: np.ndarray, start_s: float, end_s: float) -> np.ndarray:
    """Loudness of each 20 ms frame (the server's detector's frame) in the span; `samples`
    as int16 or as float in [-1, 1]."""
    return pcm.frame_dbfs(samples[round(start_s * RATE) : round(end_s * RATE)], RATE // 50)


@dataclass
class Room:
    """How the speaker's sound comes back into the microphone, and what the box knows of it."""

    #: From the writer's count of when a sample plays to its sound at the microphone: the
    #: acoustic path and whatever the sound card adds.
    acoustic_s: float = 0.003
    gain: float = 0.5
    tail: np.ndarray | None = None  # the room's impulse response after the direct sound
    gap_at_s: float | None = None  # the speaker stops here...
    gap_s: float = 0.06  # ...and plays on this much later:
    barge_in: bool = False  # a reply cut short (FarEnd.cut), or else a writer that ran late
    #: ...or else the next reply: the stream stopped and started again, and its echo comes
    #: back `moved_s` later than the writer's count says (a new run's start is not exact).
    new_run: bool = False
    moved_s: float = 0.0
    jitter_s: float = 0.001
    in_latency_s: float = 0.002  # a capture callback runs as soon as its block is recorded


def run(
    far: np.ndarray | None, talker: np.ndarray, room: Room, noise: bool = False, seed: int = 7
) -> tuple[np.ndarray, np.ndarray, Canceller]:
    """Play `far` (None: the speaker rests), let `talker` speak into the microphone too;
    returns what the microphone recorded and what the canceller made of it, as int16."""
    rng = np.random.default_rng(seed)
    far_end = FarEnd()
    canceller = Canceller(far_end, noise=noise)
    played = np.zeros(talker.size) if far is None else far
    response = np.zeros(round(room.acoustic_s * RATE) + 1)
    response[-1] = 1.0
    if room.tail is not None:
        response = np.concatenate([response, room.tail])
    echo_ = np.convolve(played, response)[: played.size] * room.gain
    gap_piece = None if room.gap_at_s is None else round(room.gap_at_s / PIECE_S)
    if gap_piece is not None:
        at, gap = round(gap_piece * PIECE_S * RATE), round((room.gap_s + room.moved_s) * RATE)
        echo_[at:] = np.concatenate([np.zeros(gap), echo_[at:]])[: echo_.size - at]
    mic = echo_ + talker + rng.standard_normal(played.size) * 1e-4
    mic16 = np.round(np.clip(mic, -1, 1) * 32767).astype(np.int16)
    far24 = np.round(np.clip(soxr.resample(played, RATE, SPEAKER_RATE), -1, 1) * 32767)
    events: list[tuple[float, str, int]] = []
    piece = round(PIECE_S * SPEAKER_RATE)
    for k in range(far24.size // piece if far is not None else 0):
        late = room.gap_s if gap_piece is not None and k >= gap_piece else 0.0
        written = k * PIECE_S + late - (0.0 if late and not room.barge_in else AHEAD_S)
        if late and room.barge_in:  # the next reply, after the cut ("cut" sorts first)
            written = max(written, gap_piece * PIECE_S)
        events.append((written, "play", k))
    if gap_piece is not None and room.barge_in:
        events.append((gap_piece * PIECE_S, "cut", gap_piece))
    block = RATE * 40 // 1000
    for j in range(mic16.size // block):
        events.append(((j + 1) * block / RATE + room.in_latency_s, "record", j))
    cleaned = []
    for _, kind, i in sorted(events):
        if kind == "play":
            late = room.gap_s if gap_piece is not None and i >= gap_piece else 0.0
            samples = far24[i * piece : (i + 1) * piece].astype(np.int16)
            first_of_run = room.new_run and i == gap_piece
            far_end.played(samples, SPEAKER_RATE, T0 + i * PIECE_S + late, first_of_run)
        elif kind == "cut":
            far_end.cut(T0 + i * PIECE_S)
        else:
            recorded = mic16[i * block : (i + 1) * block]
            jitter = rng.uniform(-room.jitter_s, room.jitter_s)
            cleaned.append(canceller.process(recorded, T0 + i * 0.04 + jitter))
    out = np.concatenate(cleaned)
    return mic16[: out.size], out, canceller


def speaking(seconds: float) -> FarEnd:
    """The speaker playing (silence) for `seconds` from T0: a canceller hearing it runs."""
    far_end = FarEnd()
    far_end.played(np.zeros(round(seconds * SPEAKER_RATE), dtype=np.int16), SPEAKER_RATE, T0)
    return far_end


def erle_db(mic: np.ndarray, out: np.ndarray, start_s: float, end_s: float) -> float:
    """How much quieter the canceller's output is than the microphone, over a span."""
    a, b = round(start_s * RATE), round(end_s * RATE)
    power = lambda x: float(np.mean(x[a:b].astype(np.float64) ** 2)) + 1e-9  # noqa: E731
    return 10 * np.log10(power(mic) / power(out))


def voiced(talker: np.ndarray, out: np.ndarray, start_s: float, end_s: float) -> float:
    """Of the 20 ms frames in which the person's voice alone would be speech to the server,
    the share that still is in the canceller's output."""
    spoken = frames_dbfs(talker, start_s, end_s) > VOICE_DBFS
    heard = frames_dbfs(out, start_s, end_s) > VOICE_DBFS
    return float(np.mean(heard[spoken]))


def test_the_speakers_echo_is_removed_after_a_second() -> None:
    far = reply(9)
    mic, out, _ = run(far, np.zeros(far.size), Room())
    assert erle_db(mic, out, 1.0, 9.0) >= 25
    assert frames_dbfs(out, 1.0, 9.0).max() < VOICE_DBFS  # nothing the server takes for speech


def test_reverberation_is_removed_too() -> None:
    far = reply(9)
    rng = np.random.default_rng(3)
    n = RATE // 4  # a 250 ms tail, decaying 8.7 dB every 50 ms
    tail = 0.3 * rng.standard_normal(n) * np.exp(-np.arange(n) / (0.05 * RATE)) / np.sqrt(n / 8)
    mic, out, _ = run(far, np.zeros(far.size), Room(tail=tail))
    assert erle_db(mic, out, 2.0, 9.0) >= 20
    assert frames_dbfs(out, 2.0, 9.0).max() < VOICE_DBFS


def test_latency_the_speaker_does_not_report_is_found_by_the_modules_delay_estimation() -> None:
    far = reply(9)
    # A speaker that buffers 60 ms beyond what it is handed (Bluetooth, a USB DSP).
    mic, out, _ = run(far, np.zeros(far.size), Room(acoustic_s=0.06))
    assert erle_db(mic, out, 3.0, 9.0) >= 25


@pytest.mark.parametrize("barge_in", [False, True])
def test_after_the_echo_moves_its_echo_stays_out(barge_in: bool) -> None:
    """A writer that ran late (the device ran dry) or a reply cut short and the next one
    started: the echo moved, and the canceller starts afresh (its echo may have been the cut)."""
    far = reply(9)
    _, out, _ = run(far, np.zeros(far.size), Room(gap_at_s=5.0, barge_in=barge_in))
    assert frames_dbfs(out, 1.0, 9.0).max() < VOICE_DBFS


def test_at_the_next_reply_a_person_is_heard_at_once_and_the_echo_stays_out() -> None:
    """The next reply is a new run of the speaker's stream, its echo a few ms from where
    the last one's was: the canceller finds where and goes on with what the module
    learned, so that a person talking over the reply's first second is heard (a module
    started afresh is guarded then: the box could not be interrupted there)."""
    far = reply(9.0)
    talker = np.zeros(far.size)
    words = spoken("Stop, what about Sunday morning?", -26.0)
    talker[6 * RATE : 6 * RATE + words.size] = words  # 0.5 s into the next reply
    mic, out, _ = run(far, talker, Room(gap_at_s=4.0, gap_s=1.5, new_run=True, moved_s=0.003))
    found = 5.5 + echo.ALIGN_S + 0.05  # the next reply, once its echo is found
    assert frames_dbfs(out, found, 6.0).max() < VOICE_DBFS  # the box alone: not heard
    assert erle_db(mic, out, found, 6.0) > 30  # its echo out from there, as before the pause
    # The person, in their first half second, as through a reply's later seconds (a test
    # above: half of it, the box as loud as they are at the microphone); none of it
    # through the guard of a module started afresh.
    assert voiced(talker, out, 6.0, 6.5) >= 0.5


@pytest.mark.parametrize("moved_s", [0.0, 0.003, -0.004, 0.03])
def test_at_the_next_reply_its_echo_stays_out_wherever_it_comes_back(moved_s: float) -> None:
    """Where the next reply's echo comes back, nearer or farther than the last one's; one
    moved too far to follow (or not found) starts the module afresh, guarded."""
    far = reply(8.0)
    _, out, _ = run(
        far, np.zeros(far.size), Room(gap_at_s=4.0, gap_s=1.5, new_run=True, moved_s=moved_s)
    )
    assert frames_dbfs(out, 5.4, 8.0).max() < VOICE_DBFS


def test_it_rests_while_the_speaker_is_quiet_and_the_words_go_on_as_recorded() -> None:
    """Between replies there is no echo to take out: after RESTING_S of a quiet speaker
    the module stops (what it held goes on as recorded), and the next reply starts it."""
    far = reply(8.0)
    talker = np.zeros(far.size)
    words = spoken("What time is it?", -26.0)
    talker[round(3.4 * RATE) : round(3.4 * RATE) + words.size] = words  # in the pause
    blocks = []  # the sizes of the blocks the module cleaned
    running = Canceller._process

    def counted(self: Canceller, samples: np.ndarray, t_first: float) -> np.ndarray:
        blocks.append(samples.size)
        return running(self, samples, t_first)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Canceller, "_process", counted)
        # the speaker plays 2 s, rests 2.5 s, plays on
        mic, out, canceller = run(far, talker, Room(gap_at_s=2.0, gap_s=2.5))
    held = round(canceller.behind_s * RATE)
    recorded = far.size - far.size % 640  # in 40 ms blocks (run() cuts the recording to `out`)
    assert out.size + held == recorded  # nothing left out, nothing twice
    quiet = slice(round(3.1 * RATE), round(4.4 * RATE))  # resting: the words as recorded
    assert np.array_equal(out[quiet], mic[quiet])
    assert voiced(talker, out, 3.4, 3.4 + words.size / RATE) == 1.0
    # The module ran while the speaker played and for RESTING_S after, then again.
    ran_s = sum(blocks) / RATE
    assert 2.0 + echo.RESTING_S <= ran_s < 2.0 + echo.RESTING_S + 0.2 + (8.0 - 4.5)
    assert erle_db(mic, out, 5.5, 8.0) > 20  # the echo of the next reply is taken out


def test_a_person_talking_over_the_reply_is_heard() -> None:
    far = reply(9)
    talker = np.zeros(far.size)
    words = spoken("Stop, what about Sunday morning?", -26.0)
    talker[6 * RATE : 6 * RATE + words.size] = words
    _, out, _ = run(far, talker, Room())
    assert frames_dbfs(out, 1.0, 6.0).max() < VOICE_DBFS  # the reply alone: nothing heard
    end = 6 + words.size / RATE
    # the server hears the person within their first 200 ms: it interrupts the reply
    assert voiced(talker, out, 6.0, 6.2) > 0
    assert voiced(talker, out, 6.0, end) >= 0.5



class LeavesSome:
    """AEC3 as far as the box can tell: what it hands back is the microphone, in step
    and held back `latency_s`, `left_db` down (the echo it took out)."""

    def __init__(self) -> None:
        self.left_db = -40.0
        self._held = np.zeros(round(echo.ECHO_LATENCY_S * RATE), dtype=np.int16)

    def process(self, near: np.ndarray, far: np.ndarray | None) -> np.ndarray:
        data = np.concatenate([self._held, near])
        self._held = data[near.size :]
        return (data[: near.size] * 10 ** (self.left_db / 20)).astype(np.int16)

    def reset(self) -> None:
        """Nothing to forget."""


def test_what_a_converging_module_leaves_of_the_echo_does_not_reach_the_server() -> None:
    """In its second second of hearing the box, a module that takes only 15 dB of the
    box's voice out (still converging) would let the server hear the box: such frames are
    lowered further. A person the module lets through, nearly as loud as recorded, is
    not; nor is anything while the box is quiet; nor, after that second, a person 15 dB
    under the box's voice at the microphone (across the room), whom nothing tells apart
    from an echo by level."""
    far_end = FarEnd()
    #: (until, the box speaking, dB the module leaves of what the microphone recorded)
    script = [(1.0, True, -40.0), (1.3, True, -15.0), (1.5, True, -3.0), (2.0, False, -15.0),
              (2.5, True, -40.0), (3.5, True, -15.0)]  # fmt: skip
    canceller = Canceller(far_end)
    module = canceller._apm = LeavesSome()
    mic = np.random.default_rng(1).standard_normal(round(script[-1][0] * RATE)) * 2000
    mic16 = np.round(mic).astype(np.int16)  # -24 dBFS at the microphone all along
    out = []
    for i in range(0, mic16.size, 640):
        t = i / RATE
        _, speaking, module.left_db = next(step for step in script if t < step[0])
        piece = np.full(round(0.04 * SPEAKER_RATE), 8000 if speaking else 0, dtype=np.int16)
        far_end.played(piece, SPEAKER_RATE, T0 + t)  # the writer keeps up with the microphone
        out.append(canceller.process(mic16[i : i + 640], T0 + t))
    heard = np.concatenate(out)

    def dbfs(start: float, end: float) -> float:
        return float(frames_dbfs(heard, start, end).max())

    assert dbfs(1.05, 1.25) < -24 - 15 - echo.GUARD_DB + 1  # the echo it left: lowered
    assert dbfs(1.05, 1.25) < VOICE_DBFS - 6  # ...below even the most sensitive detector
    assert dbfs(1.35, 1.45) > -24 - 3 - 1  # a person it let through: as it was
    assert dbfs(1.6, 1.95) > -24 - 15 - 1  # the box quiet: nothing to lower
    assert dbfs(2.7, 3.4) > -24 - 15 - 1  # after: a person across the room, as they were

class AddsAtAWord(LeavesSome):
    """AEC3 at a word after a pause in the box's speech, as recorded on the loopback (1.4 s
    into a reply): it hands back a frame louder than the microphone recorded, its own
    estimate of an echo that had not arrived yet, taken out of the silence before it."""

    def __init__(self, adds_at: list[float]) -> None:
        super().__init__()
        self.adds_at = adds_at  # when, in the microphone's time, it adds a frame
        self._count = 0  # samples handed out so far

    def process(self, near: np.ndarray, far: np.ndarray | None) -> np.ndarray:
        out = super().process(near, far)
        start = self._count - self._held.size  # the microphone sample of out[0]
        self._count += near.size
        for t in self.adds_at:
            at = round(t * RATE) - start
            if 0 <= at < out.size:  # the module's own frame (out starts with one)
                at -= at % echo.FRAME
                out[at : at + echo.FRAME] = 1200  # -29 dBFS: 8 dB over what was recorded
        return out


@pytest.mark.parametrize("offset", [0, 600], ids=["centred", "a DC offset"])
def test_a_frame_the_module_adds_while_the_box_speaks_does_not_reach_the_server(
    offset: int,
) -> None:
    """A frame 6 dB or more louder than what the microphone recorded is the module's doing,
    not a person's voice: whenever the box speaks, in its second second (the module still
    converging) and long after it, it is lowered. A person it lets through is not. A
    microphone's DC offset (a cheap USB one's few hundred), which the module's high-pass
    filter takes out, does not hide such a frame."""
    far_end = FarEnd()
    canceller = Canceller(far_end)
    module = canceller._apm = AddsAtAWord(adds_at=[1.5, 3.0])
    mic = np.random.default_rng(2).standard_normal(4 * RATE) * 500
    mic[round(3.5 * RATE) :] *= 8  # a person, 18 dB over the echo, from 3.5 s
    mic16 = np.round(mic + offset).astype(np.int16)
    out = []
    for i in range(0, mic16.size, 640):
        module.left_db = -1.0 if i >= 3.5 * RATE else -40.0  # the person goes through
        piece = np.full(round(0.04 * SPEAKER_RATE), 8000, dtype=np.int16)
        far_end.played(piece, SPEAKER_RATE, T0 + i / RATE)
        out.append(canceller.process(mic16[i : i + 640], T0 + i / RATE))
    heard = np.concatenate(out)
    for t in module.adds_at:
        assert frames_dbfs(heard, t - 0.02, t + 0.03).max() < VOICE_DBFS - 6, t
    assert frames_dbfs(heard, 3.55, 3.95).min() > -18 - 1 - 3  # the person, not lowered


def test_with_the_speaker_resting_the_microphone_passes() -> None:
    talker = spoken("Hello, what is the time?", -26.0)
    _, out, _ = run(None, talker, Room())
    assert voiced(talker, out, 0.0, talker.size / RATE - 0.05) == 1.0


@pytest.mark.parametrize("with_echo, noise", [(True, False), (False, True), (True, True)])
def test_what_comes_out_is_in_step_with_what_went_in(with_echo: bool, noise: bool) -> None:
    """The module holds back `latency_s`; what comes out starts with the first sample that
    went in, so the stream is neither shifted nor padded (its times say how late it is)."""
    samples = np.round(spoken("Hello, what is the time?", -20.0) * 32767).astype(np.int16)
    canceller = Canceller(speaking(samples.size / RATE) if with_echo else None, noise=noise)
    blocks = range(0, samples.size - 639, 640)
    out = np.concatenate([canceller.process(samples[i : i + 640], T0 + i / RATE) for i in blocks])
    held_back = round(canceller.behind_s * RATE)
    assert out.size + held_back == len(blocks) * 640
    assert held_back >= round(canceller.latency_s * RATE) > 0
    corr = np.correlate(out.astype(np.float64), samples[: out.size].astype(np.float64), "full")
    assert int(np.argmax(corr)) - (out.size - 1) == 0


def test_blocks_that_are_not_whole_frames_wait_for_the_rest() -> None:
    canceller = Canceller(None, noise=True)
    assert canceller.process(np.zeros(100, dtype=np.int16), T0).size == 0
    assert canceller.behind_s == pytest.approx(100 / RATE)  # all of it, nothing out yet
    out = canceller.process(np.zeros(250, dtype=np.int16), T0 + 100 / RATE)
    assert out.size == 320 - 96  # what the module holds back at the start is left out
    assert canceller.behind_s == pytest.approx((30 + 96) / RATE)


def test_it_starts_where_the_unprocessed_audio_stopped() -> None:
    """Idle, the microphone goes out as recorded; at a press the canceller takes over
    mid-stream, and the words spoken across that moment arrive whole."""
    samples = np.round(spoken("One two three four five six seven.", -20.0) * 32767).astype(np.int16)
    canceller = Canceller(FarEnd(), noise=True)
    out = []
    for i in range(0, samples.size - 639, 640):
        active = i >= RATE // 2  # the press, half a second in
        out.append(canceller.process(samples[i : i + 640], T0 + i / RATE, active))
    got = np.concatenate(out).astype(np.float64)
    assert np.array_equal(got[: RATE // 2], samples[: RATE // 2])  # before: as recorded
    after = got[RATE // 2 : RATE // 2 + 3200]  # the 200 ms from the press on
    around = samples[RATE // 2 - 200 : RATE // 2 + 3400].astype(np.float64)
    fit = np.correlate(after, around, "valid")
    assert int(np.argmax(fit)) == 200  # in step: nothing left out, nothing said twice
    norm = np.linalg.norm(after) * np.linalg.norm(around[200:-200])
    assert fit.max() / norm > 0.8  # and the same words (filtered: not sample for sample)


# -- the reference timeline -------------------------------------------------------------


def test_far_end_reads_silence_where_nothing_played() -> None:
    far_end = FarEnd()
    assert not far_end.heard(T0, 160).any()  # nothing yet
    far_end.played(np.full(160, 1000, dtype=np.int16), RATE, T0)
    far_end.played(np.full(160, 2000, dtype=np.int16), RATE, T0 + 0.5)  # a pause between
    assert (far_end.heard(T0, 160) == 1000).all()
    assert not far_end.heard(T0 + 0.1, 160).any()
    assert (far_end.heard(T0 + 0.5, 160) == 2000).all()
    assert not far_end.heard(T0 + 0.6, 160).any()  # not played (yet)


def test_far_end_says_when_the_speaker_did_not_follow_on() -> None:
    far_end = FarEnd()
    far_end.played(np.full(160, 1000, dtype=np.int16), RATE, T0)
    far_end.played(np.full(160, 1000, dtype=np.int16), RATE, T0 + 0.01)
    assert not far_end.moved  # one piece after the other
    far_end.played(np.full(160, 1000, dtype=np.int16), RATE, T0 + 0.5, new_run=True)
    assert far_end.new_run and not far_end.moved  # the next reply: its echo is found again
    far_end.played(np.full(160, 1000, dtype=np.int16), RATE, T0 + 0.7)
    assert far_end.moved  # the device ran dry within a run: an xrun


def test_a_cut_silences_what_the_device_was_handed_but_never_played() -> None:
    far_end = FarEnd()
    far_end.played(np.full(1600, 1000, dtype=np.int16), RATE, T0)  # 100 ms handed over
    far_end.cut(T0 + 0.04)  # the barge-in's abort, 40 ms in
    assert far_end.moved
    assert (far_end.heard(T0, 640) == 1000).all()
    assert not far_end.heard(T0 + 0.04, 960).any()
    far_end.played(np.full(160, 2000, dtype=np.int16), RATE, T0 + 0.5)  # the next reply
    assert not far_end.heard(T0 + 0.1, 160).any()
    assert (far_end.heard(T0 + 0.5, 160) == 2000).all()


def test_far_end_forgets_what_is_older_than_its_history() -> None:
    far_end = FarEnd(history_s=0.1)
    far_end.played(np.full(160, 1000, dtype=np.int16), RATE, T0)
    far_end.played(np.full(160, 2000, dtype=np.int16), RATE, T0 + 0.2)
    assert not far_end.heard(T0, 160).any()
    assert (far_end.heard(T0 + 0.2, 160) == 2000).all()


def test_far_end_reads_silence_in_a_pause_after_its_history_wrapped() -> None:
    """A pause in what the speaker played, once a whole history has played before it, is
    silence to the echo canceller, not the box's voice from a second before: that stale
    voice would be 'cancelled' out of a person speaking in the pause."""
    far_end = FarEnd(history_s=1.0)
    far_end.played(np.full(RATE, 1000, dtype=np.int16), RATE, T0)  # a whole second
    far_end.played(np.full(160, 2000, dtype=np.int16), RATE, T0 + 1.5)  # after a pause
    assert not far_end.heard(T0 + 1.2, 160).any()
    assert (far_end.heard(T0 + 1.5, 160) == 2000).all()


def test_far_end_places_resampled_sound_where_it_was_heard() -> None:
    far_end = FarEnd(history_s=4.0)
    click_at = 0.3
    played = np.zeros(SPEAKER_RATE // 2, dtype=np.int16)
    played[round(click_at * SPEAKER_RATE)] = 30000
    for start in (T0, T0 + 2.5):  # the speaker rests for two seconds in between
        for k in range(50):  # 10 ms periods at 24 kHz
            far_end.played(played[k * 240 : (k + 1) * 240], SPEAKER_RATE, start + k * 0.01)
    heard = far_end.heard(T0, 3 * RATE)
    clicks = np.flatnonzero(np.abs(heard) > 3000)
    assert {round(i / RATE - click_at, 3) for i in clicks} == {0.0, 2.5}


# -- the clock --------------------------------------------------------------------------


def test_sample_clock_keeps_the_count_through_jitter_and_drifting_stamps() -> None:
    clock = SampleClock(RATE, jump_s=0.02)
    rng = np.random.default_rng(0)
    starts = [clock.place(T0 + k * 0.04 + rng.uniform(-0.002, 0.002), 640) for k in range(50)]
    assert np.max(np.abs(np.diff(starts) - 0.04)) < 1e-9  # 4 ms of jitter: gone
    # stamps that drift a millisecond a second from the count (PulseAudio's ALSA plugin)
    drifting = [clock.place(T0 + 2 + k * 0.04 * (1 + 1e-3), 640) for k in range(250)]
    assert np.max(np.abs(np.diff(drifting) - 0.04)) < 1e-9
    assert not clock.jumped
    late = drifting[-1] + 0.04 + 0.015  # a callback 15 ms late: the card played on regardless
    assert clock.place(late, 640) == pytest.approx(drifting[-1] + 0.04)
    assert not clock.jumped
    clock.resync()  # an xrun: the stream did skip
    assert clock.place(late + 0.04, 640) == late + 0.04
    assert clock.place(T0 + 1000.0, 640) == T0 + 1000.0  # a stream that restarted
    assert clock.jumped


# -- where the binding is missing ----------------------------------------------------------


def test_unavailable_says_why_when_the_binding_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert echo.unavailable() is None  # installed here

    def missing(name: str) -> types.ModuleType:
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(echo.importlib, "import_module", missing)
    assert echo.unavailable()
    # 32-bit Raspberry Pi OS: pip finds only the 0.0.1 placeholder, an empty package
    monkeypatch.setattr(echo.importlib, "import_module", lambda name: types.ModuleType(name))
    assert echo.unavailable()


def test_without_the_binding_cancel_falls_back_to_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    assert echo.plan("cancel", False, hands_free=True) == echo.Plan("cancel", True, False)
    assert echo.plan("cancel", True, hands_free=True) == echo.Plan("cancel", True, True)

    def missing(name: str) -> types.ModuleType:
        raise ImportError("no wheel for this platform")

    monkeypatch.setattr(echo.importlib, "import_module", missing)
    fallback = echo.plan("cancel", False, hands_free=True)
    assert (fallback.mic_during_playback, fallback.echo, fallback.noise) == ("gate", False, False)
    assert fallback.missing and "no wheel for this platform" in fallback.missing
    # Settings that never wanted the module are left as they are, and say nothing.
    assert echo.plan("attenuate", False, hands_free=True) == echo.Plan("attenuate", False, False)


def test_push_to_talk_cancels_no_echo_and_suppresses_noise_only_when_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert echo.plan("cancel", False, hands_free=False) == echo.Plan("cancel", False, False)
    assert echo.plan("cancel", True, hands_free=False) == echo.Plan("cancel", False, True)
    assert echo.plan("gate", False, hands_free=True) == echo.Plan("gate", False, False)

    def missing(name: str) -> types.ModuleType:
        raise ImportError("no wheel for this platform")

    # 32-bit Raspberry Pi OS, push-to-talk with the default: nothing is missing, no warning.
    monkeypatch.setattr(echo.importlib, "import_module", missing)
    assert echo.plan("cancel", False, hands_free=False) == echo.Plan("cancel", False, False)


def _box_speaking_to(
    canceller: Canceller,
    module: LeavesSome,
    far_end: FarEnd,
    script: list[tuple[float, bool, float]],
    between: Callable[[float], bool] | None = None,
) -> np.ndarray:
    """What the server hears of -24 dBFS at the microphone while the box speaks (or not)
    and the module leaves `left_db` of it, by `script` (until, the box speaking, left_db);
    `between(t)` is called before each 40 ms block."""
    mic = np.random.default_rng(3).standard_normal(round(script[-1][0] * RATE)) * 2000
    mic16 = np.round(mic).astype(np.int16)
    out = []
    for i in range(0, mic16.size, 640):
        t = i / RATE
        _, speaking, module.left_db = next(step for step in script if t < step[0])
        active = True if between is None else between(t)
        piece = np.full(round(0.04 * SPEAKER_RATE), 8000 if speaking else 0, dtype=np.int16)
        far_end.played(piece, SPEAKER_RATE, T0 + t)
        out.append(canceller.process(mic16[i : i + 640], T0 + t, active=active))
    return np.concatenate(out)


def test_after_a_reply_cut_short_the_modules_second_second_is_guarded_again() -> None:
    """A reply cut short and the next one started (the echo moved): the module starts
    afresh, and for the second second of hearing the box again what it leaves of the
    echo (15 dB under the microphone) is lowered, as after the box's first words; else
    the server hears the box, and the box interrupts itself."""

    far_end = FarEnd()
    canceller = Canceller(far_end)
    module = canceller._apm = LeavesSome()

    def cut_at_3(t: float) -> bool:
        if abs(t - 3.0) < 1e-9:
            far_end.cut(T0 + t)
        return True

    script = [(3.0, True, -40.0), (4.0, True, -40.0), (5.0, True, -15.0)]
    heard = _box_speaking_to(canceller, module, far_end, script, between=cut_at_3)
    assert frames_dbfs(heard, 4.1, 4.95).max() < -24 - 15 - echo.GUARD_DB + 1


def test_a_canceller_switched_on_again_while_the_box_speaks_keeps_cleaning() -> None:
    """The microphone's forwarding stopped and started again while the box went on
    speaking, its module long converged: the first block after the start is not whole
    frames (the module's priming is dropped from it), and the guard must take it; a
    canceller that failed there sent the box's own voice, as recorded, from then on."""

    far_end = FarEnd()
    canceller = Canceller(far_end)
    module = canceller._apm = LeavesSome()
    script = [(5.0, True, -40.0)]
    heard = _box_speaking_to(canceller, module, far_end, script,
                             between=lambda t: not 3.0 <= t < 3.2)  # fmt: skip
    assert canceller.failed is None, canceller.failed
    assert frames_dbfs(heard, 3.5, 4.9).max() < -24 - 30


def test_a_person_the_converging_module_takes_a_little_of_is_heard() -> None:
    """In the module's second second of hearing the box, a person talking over it whom the
    module takes 8 dB out of (still converging) is what the server hears, as they are
    left: only what it takes RESIDUE_DB or more out of is the echo's residue."""

    far_end = FarEnd()
    canceller = Canceller(far_end)
    module = canceller._apm = LeavesSome()
    heard = _box_speaking_to(canceller, module, far_end, [(1.0, True, -40.0), (2.0, True, -8.0)])
    assert frames_dbfs(heard, 1.1, 1.9).min() > -24 - 8 - 1.5


def test_a_word_after_a_pause_in_the_reply_is_lowered_while_the_module_catches_it() -> None:
    """At a word after a pause in a reply a long converged AEC3 now and then hands back its
    first 50 ms as recorded (seen on the loopback: the box interrupted itself); for
    ONSET_S from the box speaking again, what comes out is lowered. A person the module
    lets through in the middle of a reply is not."""
    far_end = FarEnd()
    canceller = Canceller(far_end)
    module = canceller._apm = LeavesSome()
    script = [(3.0, True, -40.0), (3.28, False, -40.0), (3.36, True, 0.0), (4.0, True, -40.0),
              (4.2, True, 0.0), (5.0, True, -40.0)]  # fmt: skip
    heard = _box_speaking_to(canceller, module, far_end, script)
    assert frames_dbfs(heard, 3.3, 3.36).max() < -24 - echo.GUARD_DB + 1.5
    assert frames_dbfs(heard, 4.05, 4.2).min() > -24 - 1.5


def test_the_echos_delay_is_found_in_the_box_voice_and_not_in_a_persons() -> None:
    """The next reply's echo is found where it is, in 0.2 s of the box's voice, nearer the
    last one's than ALIGN_REACH_S; a person's voice alone (no echo in it) is no echo."""
    far = np.round(reply(1.0)[: round(echo.ALIGN_S * RATE) + 800] * 32767).astype(np.int16)
    near = np.concatenate([np.zeros(240), far[:-240] // 2])  # 15 ms later, 6 dB down
    window = slice(800, None)  # from the box's first words (the reply starts quiet)
    assert echo.echo_delay(near[window], far[window]) == 240
    assert echo.echo_delay(near[window], far[window], around=200) == 240
    assert echo.echo_delay(near[window], far[window], around=240 + 400) is None  # too far
    person = np.round(spoken("What about Sunday?", -26.0)[: far.size] * 32767).astype(np.int16)
    assert echo.echo_delay(person[window], far[window]) is None


def test_a_silent_microphone_or_an_echo_with_its_reference_teaches_no_delay() -> None:
    """A microphone that heard nothing (digital silence: a muted USB microphone, a sound
    server that started the speaker late) holds no echo, and one that came with its
    reference, not after it, is not a delay to hold the next replies' echoes at (AEC3
    cannot take those out): neither is learned. Near where the echo was, it is followed."""
    far = np.round(reply(1.0)[800 : 800 + round(echo.ALIGN_S * RATE)] * 32767).astype(np.int16)
    assert echo.echo_delay(np.zeros_like(far), far) is None
    with_it = far // 2  # at the reference's own time, 6 dB down
    assert echo.echo_delay(with_it, far) is None
    assert echo.echo_delay(with_it, far, around=echo.ALIGN_MIN + 40) == 0
