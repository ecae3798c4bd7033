"""The echo canceller around a moved echo (the next reply, a cut, an overflow), judged by
what a person at the box would notice: their words over the box's voice reaching the service."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import soxr
from test_audio_echo import (
    SPEAKER_RATE,
    VOICE_DBFS,
    LeavesSome,
    Room,
    _box_speaking_to,
    frames_dbfs,
    reply,
    run,
    spoken,
    voiced,
)

from device.audio import echo
from device.audio.echo import RATE, Canceller, FarEnd

T0 = 1000.0


def _moved_at_2(how: str, far_end: FarEnd, canceller: Canceller) -> Callable[[float], bool]:
    """Before the block at 2 s, the echo moves: a reply cut short and the next one
    started, or the microphone's stream lost input (an overflow)."""

    def between(t: float) -> bool:
        if abs(t - 2.0) < 1e-9:
            if how == "cut":
                far_end.cut(T0 + t)
            else:
                canceller.resync()
        return True

    return between


@pytest.mark.parametrize("how", ["cut", "microphone overflow"])
def test_after_the_echo_moved_the_guard_lifts_and_a_person_is_heard(how: str) -> None:
    """The echo moved at 2 s: the module starts afresh, guarded for its GUARD_S + RESIDUE_S
    of hearing the box, and then no more. A person talking over the box at 4.5 s (the
    module lets them through, 8 dB down) reaches the service; a canceller that started
    afresh at every block after the move kept them 20 dB down for the rest of the reply,
    and nobody could interrupt it."""
    far_end = FarEnd()
    canceller = Canceller(far_end)
    module = canceller._apm = LeavesSome()
    script = [(4.5, True, -40.0), (5.5, True, -8.0)]
    heard = _box_speaking_to(
        canceller, module, far_end, script, between=_moved_at_2(how, far_end, canceller)
    )
    assert frames_dbfs(heard, 4.6, 5.4).min() > -24 - 8 - 1.5


def test_a_reply_that_starts_quiet_is_followed_and_a_person_is_heard_at_once() -> None:
    """The next reply starts with 0.3 s of quiet (the service's audio often does): its echo
    is found in the box's first words, not in the quiet before them. Looked for in the
    quiet, it was not found: the module started afresh, guarded, and a person talking
    over the reply's first second was lowered 20 dB."""
    far = reply(9.0).copy()
    far[4 * RATE : round(4.3 * RATE)] = 0.0  # the next reply's first 0.3 s (it plays at 5.5 s)
    talker = np.zeros(far.size)
    words = spoken("Stop, what about Sunday morning?", -26.0)
    at = round(6.3 * RATE)  # 0.8 s into the next reply: 0.5 s into its voice
    talker[at : at + words.size] = words
    _, out, _ = run(far, talker, Room(gap_at_s=4.0, gap_s=1.5, new_run=True, moved_s=0.003))
    found = 5.8 + echo.ALIGN_S + 0.05
    assert frames_dbfs(out, found, 6.3).max() < VOICE_DBFS  # the box alone: not heard
    assert voiced(talker, out, 6.3, 6.8) >= 0.5


class FixedFilter:
    """A long-converged module as the box sees it, its filter fixed at `delay` samples of
    the reference: it takes the echo out exactly where the reference says it is, and none
    of an echo that moved (AEC3's converged filter follows a move only slowly: on the
    loopback 3 of 12 replies interrupted themselves). Held back as the module is."""

    def __init__(self, delay: int, gain: float, relearned: int | None = None) -> None:
        self.gain = gain
        self.relearned = relearned  # where its filter is after a reset, if it moves
        self._far = np.zeros(delay)
        self._held = np.zeros(round(echo.ECHO_LATENCY_S * RATE))

    def process(self, near: np.ndarray, far: np.ndarray | None) -> np.ndarray:
        ref = np.concatenate([self._far, np.zeros(near.size) if far is None else far])
        self._far = ref[near.size :]
        data = np.concatenate([self._held, near - self.gain * ref[: near.size]])
        self._held = data[near.size :]
        return np.round(data[: near.size]).astype(np.int16)

    def reset(self) -> None:
        """Started afresh, it finds the echo where it now is (AEC3 finds a new delay sooner
        from its initial state): at once, the guard covering what a real one relearns."""
        if self.relearned is not None:
            kept = self._far[-self.relearned :] if self.relearned else self._far[:0]
            self._far = np.concatenate([np.zeros(self.relearned - kept.size), kept])


ACOUSTIC = 48  # samples from the writer's count to the microphone (3 ms)
PAUSE = 0.5  # between the replies: the speaker's stream stops and starts again
PIECE_S = 0.05  # what the speaker's writer hands PortAudio at a time, 100 ms ahead


def _replies(
    moved: list[int],
    monkeypatch: pytest.MonkeyPatch,
    acoustic: int = ACOUSTIC,
    overflow: tuple[float, int] | None = None,
    talker: np.ndarray | None = None,
    stall: tuple[float, int] | None = None,
    pause_s: float = PAUSE,
) -> np.ndarray:
    """Reply A plays 3 s; after each `pause_s` (the speaker's stream stops and starts again)
    the next plays 2.5 s, its echo `moved[i]` samples later than A's; the module's filter
    stays where A's echo was; `acoustic`: samples from the writer's count to the microphone.
    `overflow`: when the microphone's stream lost input, and how many samples later the
    echo comes back from then on; `talker`: a person at the microphone too (float);
    `stall`: when the speaker stalled in A unreported, and how many samples later A's echo
    comes from then on (the module's filter followed it there).
    What the service hears, from the microphone's first sample."""
    a, b, pause = round(3.0 * RATE), round(2.5 * RATE), round(pause_s * RATE)
    voice = np.round(reply(9.0)[: a + b * len(moved)] * 32767).astype(np.int16)
    starts = [0] + [a + pause + i * (b + pause) for i in range(len(moved))]
    played = np.zeros(starts[-1] + b, dtype=np.int16)
    played[:a] = voice[:a]
    delays = np.full(played.size, acoustic)
    for i, start in enumerate(starts[1:]):
        played[start : start + b] = voice[a + i * b : a + (i + 1) * b]
        delays[start - pause // 2 :] = acoustic + moved[i]
    overflow_at, overflow_moved = (None, 0) if overflow is None else overflow
    if overflow_at is not None:
        delays[round(overflow_at * RATE) :] += overflow_moved
    stall_at, stall_moved = (None, 0) if stall is None else stall
    if stall_at is not None:
        delays[round(stall_at * RATE) : a + pause // 2] += stall_moved
    index = np.arange(played.size) - delays
    mic = np.where(index >= 0, 0.5 * played[np.clip(index, 0, None)], 0.0)
    mic += np.random.default_rng(4).standard_normal(mic.size)
    if talker is not None:
        mic[: talker.size] += talker[: mic.size] * 32767
    reference_delay = acoustic + round(echo.LEAD_S * RATE)
    module = FixedFilter(reference_delay + stall_moved, 0.5, reference_delay + overflow_moved)
    runs = [(start, start + (a if i == 0 else b)) for i, start in enumerate(starts)]
    return _heard(played, np.round(mic).astype(np.int16), runs, module, monkeypatch, overflow_at)


def _heard(
    played: np.ndarray,
    mic: np.ndarray,
    runs: list[tuple[int, int]],
    module: FixedFilter,
    monkeypatch: pytest.MonkeyPatch,
    overflow_at: float | None = None,
) -> np.ndarray:
    """What the service hears of `mic` (int16) while the speaker plays `runs` of `played`
    (first and last sample; each after the first a new run of the speaker's stream), as
    the box does it: the speaker's writer hands PIECE_S at a time 100 ms ahead, the capture
    40 ms blocks to a canceller around `module`; `overflow_at`: when the microphone's
    stream lost input."""
    monkeypatch.setattr(echo, "webrtc_module", lambda **_: module)
    far_end = FarEnd()
    canceller = Canceller(far_end)
    piece, block = round(PIECE_S * RATE), round(0.04 * RATE)
    pieces = [k for lo, hi in runs for k in range(lo, hi, piece)]
    new_runs = {lo for lo, _ in runs[1:]}
    out = []
    for j in range(0, mic.size - block + 1, block):
        while pieces and pieces[0] / RATE - 0.1 <= (j + block) / RATE:  # handed 100 ms ahead
            k = pieces.pop(0)
            far_end.played(played[k : k + piece], RATE, T0 + k / RATE, new_run=k in new_runs)
        if overflow_at is not None and j == round(overflow_at * RATE):
            canceller.resync()  # the capture's overflow: its clock believes the next time
        out.append(canceller.process(mic[j : j + block], T0 + j / RATE))
    return np.concatenate(out)


@pytest.mark.parametrize("moved_ms", [5, -3])
def test_the_next_replys_moved_echo_never_reaches_the_service(
    moved_ms: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next reply's echo comes back a few ms from where the last one's did: while the
    canceller finds where (the microphone muted) and from then on (the reference moved as
    much), nothing of the box's voice reaches the service; a module that hears the moved
    echo against the old reference lets it through, and the box interrupts itself."""
    heard = _replies([round(moved_ms * RATE / 1000)], monkeypatch)
    b = 3.0 + PAUSE
    assert frames_dbfs(heard, 0.5, 3.0).max() < VOICE_DBFS  # reply A: its echo out
    assert frames_dbfs(heard, b, b + 2.4).max() < VOICE_DBFS  # reply B: found, followed


def test_a_person_already_talking_as_the_next_reply_starts_is_heard_once_it_is_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A person starts talking 0.1 s into the next reply. While its echo is found (the
    microphone muted for the first ALIGN_S of it) the module hears the reply's first word,
    and from then on the person reaches the service. Taken for a word after a pause when
    the mute ended, the next 0.1 s of them was lowered 20 dB as well."""
    b = 3.0 + PAUSE
    talker = np.zeros(round((b + 2.5) * RATE))
    words = spoken("Stop, what about Sunday morning?", -26.0)[:RATE]
    at = round((b + 0.1) * RATE)
    talker[at : at + words.size] = words
    heard = _replies([80], monkeypatch, talker=talker)
    assert voiced(talker, heard, b + echo.ALIGN_S, b + echo.ALIGN_S + 0.2) >= 0.9


def test_the_next_replys_echo_moved_too_far_to_follow_is_guarded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An echo moved 30 ms (beyond ALIGN_REACH_S) is not found near the last one's: the
    module starts afresh, guarded, and what it leaves of the moved echo in the reply's
    first second is lowered below the service's voice detector. A canceller that followed
    "nothing found" failed for good, and the box's voice went out as recorded."""
    heard = _replies([round(0.03 * RATE)], monkeypatch)
    b = 3.0 + PAUSE
    assert frames_dbfs(heard, b + echo.ALIGN_S, b + 1.0).max() < VOICE_DBFS


def test_each_next_replys_echo_is_followed_from_where_the_last_one_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reply after reply, the echo comes back a few ms from where the last one's did: each
    move adds to the ones before (the reference read earlier by all of them together), and
    none of the box's voice reaches the service in the third reply either."""
    heard = _replies([80, 160], monkeypatch)  # 5 ms later, then 5 ms later again
    c = 3.0 + PAUSE + 2.5 + PAUSE
    assert frames_dbfs(heard, c, c + 2.4).max() < VOICE_DBFS


def test_behind_a_speaker_that_adds_60_ms_the_next_replys_echo_is_followed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A speaker that buffers 60 ms beyond what it is handed (Bluetooth, a USB DSP): the
    echo is found near where it was, 60 ms on, as near a speaker that adds nothing; read
    at the wrong place, the reference let the next reply's echo through."""
    heard = _replies([80], monkeypatch, acoustic=round(0.06 * RATE))
    b = 3.0 + PAUSE
    assert frames_dbfs(heard, b, b + 2.4).max() < VOICE_DBFS


def test_after_an_overflow_the_next_reply_is_followed_from_where_the_echo_went(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The microphone's stream lost input mid-reply and the echo came back 15 ms later:
    the module starts afresh, and where the echo now is, is learned again. The next reply
    moves 10 ms more: found near where it was after the overflow, followed, and a person
    talking over its first second reaches the service; found near where it was before
    (25 ms: too far), the module started afresh, and its guard lowered them 20 dB."""
    b = 3.0 + PAUSE
    talker = np.zeros(round((b + 2.5) * RATE))
    words = spoken("Stop, what about Sunday morning?", -26.0)[:RATE]
    at = round((b + 0.4) * RATE)
    talker[at : at + words.size] = words
    heard = _replies([160], monkeypatch, overflow=(1.6, 240), talker=talker)
    assert frames_dbfs(heard, 2.0, 3.0).max() < VOICE_DBFS  # reply A after the overflow
    assert voiced(talker, heard, b + 0.4, b + 1.4) >= 0.9


def test_an_overflow_while_the_canceller_rests_leaves_the_next_reply_followed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between two replies, 1.4 s into a 2 s pause (the canceller resting: nothing to take
    out), the microphone's stream lost input (a throttled Pi, apt beside it). The module
    heard none of it: the next reply's echo, 5 ms from where A's was, is found and
    followed as after any pause, and a person talking over that reply's first second
    reaches the service. Started afresh for the overflow, the module was guarded for the
    reply's first two seconds and they were lowered 20 dB."""
    pause = 2.0
    b = 3.0 + pause
    talker = np.zeros(round((b + 2.5) * RATE))
    words = spoken("Stop, what about Sunday morning?", -26.0)[:RATE]
    at = round((b + 0.4) * RATE)
    talker[at : at + words.size] = words
    heard = _replies([80], monkeypatch, overflow=(4.4, 0), talker=talker, pause_s=pause)
    assert frames_dbfs(heard, b, b + 0.4).max() < VOICE_DBFS  # the box alone: not heard
    assert voiced(talker, heard, b + 0.4, b + 1.4) >= 0.9


def test_after_an_echo_moved_unreported_the_next_reply_is_followed_from_where_it_went(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The speaker stalled 0.6 s into reply A and nobody said so (a sound server's own
    underrun: PulseAudio's ALSA plugin reports none): A's echo came 5 ms later from then
    on, and the module's filter followed it. The next reply's echo comes back where A's
    started: found against where the module now hears the echo, the reference moves by as
    much, and none of it reaches the service. Found against where A's echo was first
    learned, the module heard it 5 ms off its filter and let it through (the loopback
    under load: the box interrupted itself a second into its second reply)."""
    heard = _replies([0], monkeypatch, stall=(0.6, 85))
    b = 3.0 + PAUSE
    assert frames_dbfs(heard, b, b + 2.4).max() < VOICE_DBFS


def test_after_an_earcon_the_microphone_did_not_hear_the_reply_is_learned_afresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The press's earcon plays and its echo never reaches the microphone (digital silence:
    the loopback's sound server started it late, under load). Nothing is learned from it,
    and the reply after it is learned afresh: none of its echo reaches the service. Read as
    delay 0, the silence had the reply's echo followed there, before its reference (CI:
    the box interrupted itself in its first reply)."""
    reference_delay = ACOUSTIC + round(echo.LEAD_S * RATE)
    earcon_at, reply_at = round(0.5 * RATE), round(1.5 * RATE)
    played = np.zeros(reply_at + 3 * RATE, dtype=np.int16)
    tone = np.sin(2 * np.pi * 660 * np.arange(round(0.19 * RATE)) / RATE)
    played[earcon_at : earcon_at + tone.size] = np.round(tone * 9000).astype(np.int16)
    played[reply_at:] = np.round(reply(3.0) * 32767).astype(np.int16)
    mic = 0.5 * np.concatenate([np.zeros(ACOUSTIC), played[:-ACOUSTIC]])
    mic[:reply_at] = 0.0  # the earcon's echo: not heard
    mic[reply_at:] += np.random.default_rng(5).standard_normal(mic.size - reply_at)
    runs = [(earcon_at, earcon_at + tone.size), (reply_at, played.size)]
    module = FixedFilter(reference_delay, 0.5, reference_delay)
    heard = _heard(played, np.round(mic).astype(np.int16), runs, module, monkeypatch)
    assert frames_dbfs(heard, 1.5, 4.4).max() < VOICE_DBFS


@pytest.mark.parametrize("quiet", [0, 30], ids=["silent", "a breath at -60 dBFS"])
def test_a_word_after_a_pause_mid_block_is_lowered_whole(quiet: int) -> None:
    """The box speaks again after a pause 20 ms into a 40 ms block of the microphone, its
    pause not quite silent (a breath, the service's own noise floor): for ONSET_S from
    there, what a long-converged module lets through as recorded is lowered GUARD_DB, in
    every 10 ms frame and every sample of it; else the service hears the box's word, and
    the box interrupts itself."""
    far_end = FarEnd()
    canceller = Canceller(far_end)
    module = canceller._apm = LeavesSome()
    mic16 = np.round(np.random.default_rng(3).standard_normal(4 * RATE) * 2000).astype(np.int16)
    box = np.full(4 * RATE, 8000, dtype=np.int16)
    box[round(2.6 * RATE) : round(3.02 * RATE)] = quiet  # the pause: 420 ms
    block, speaker = 640, round(0.04 * SPEAKER_RATE)
    out = []
    for i in range(0, mic16.size, block):
        t = i / RATE
        module.left_db = 0.0 if 3.0 <= t < 3.1 else -40.0  # the word's first moments
        piece = soxr.resample(box[i : i + block].astype(np.float64), RATE, SPEAKER_RATE)
        far_end.played(np.round(piece[:speaker]).astype(np.int16), SPEAKER_RATE, T0 + t)
        out.append(canceller.process(mic16[i : i + block], T0 + t))
    heard = np.concatenate(out)
    assert frames_dbfs(heard, 3.02, 3.1).max() < -24 - echo.GUARD_DB + 2
