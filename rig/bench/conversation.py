"""Side by side: the box in a hands-free conversation and the reference client, measured alike.

Both stream their microphone all the time and leave the turns to the server's
activity detection, so the same things can be asked of both: CPU while the
conversation is open and nobody talks; a run of turns, a burst of speech into
the microphone every TURN_PERIOD_S, with the CPU of each turn, the time from the
server's first reply chunk to sound at the speaker and the gaps heard inside each
reply; and where the CPU goes, thread by thread.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import numpy as np

from device.audio import pcm
from device.live.wire import MIC_RATE, REPLY_RATE
from rig.bench.harness import BenchDaemon, BenchError, Harness, Subject, progress
from rig.bench.load import busy_cores
from rig.bench.markers import marker
from rig.bench.proc import cpu_seconds, cpu_with_threads, thread_cpu, thread_split
from rig.bench.turns import SOUND_DBFS, TURN_TIMEOUT_S, ms, silence_after, wait_for
from rig.loopback import Recorder

SPEECH_S = 0.6  # each turn's burst of speech into the microphone
TURN_PERIOD_S = 5.0  # one turn starts this often: speech, reply, then quiet
TURN_REPLY_S = 2.0  # the server's reply to each turn
BARGE_REPLY_S = 3.0  # long enough to be talked over
SETTLE_S = 2.0
#: Silence this long inside a reply is a gap: a click or a drop-out a person hears.
GAP_MS = 2.0
#: The box as a hands-free conversation that stays open however long nobody talks. The
#: reference takes no echo out: the box is compared as it runs without its canceller
#: (what that costs is the echo benchmark's, `rig.bench.echo`).
HANDS_FREE: dict[str, dict[str, object]] = {
    "button": {"mode": "toggle"},
    "conversation": {"end_after_silence_s": 3600},
    "audio": {"mic_during_playback": "gate"},
}


@dataclass
class Side:
    """What one client did in the side-by-side phases (ms, s/min, counts)."""

    quiet_cpu: list[float] = field(default_factory=list)
    quiet_threads: list[dict[str, float]] = field(default_factory=list)
    turn_cpu: list[float] = field(default_factory=list)
    turn_threads: list[dict[str, float]] = field(default_factory=list)
    reply_to_sound: list[float] = field(default_factory=list)
    gaps: list[int] = field(default_factory=list)  # per reply

    def add(self, other: Side) -> None:
        for name in ("quiet_cpu", "quiet_threads", "turn_cpu", "turn_threads"):
            getattr(self, name).extend(getattr(other, name))
        self.reply_to_sound.extend(other.reply_to_sound)
        self.gaps.extend(other.gaps)


def open_conversation(h: Harness, d: BenchDaemon) -> None:
    """Press once (toggle mode): the conversation opens and the microphone streams."""
    pressed = d.press()
    h.wait(lambda: h.first("audio", "in", pressed) is not None, 10, "the conversation", d)


def measure(h: Harness, subject: Subject, pid: int, turns: int, cpu_s: float,
            window_s: float) -> Side:
    """Quiet CPU for `cpu_s`, then `turns` turns, on a client whose conversation is open."""
    time.sleep(SETTLE_S)
    side = Side()
    progress(f"conversation open, nobody talking: CPU for {cpu_s:.0f} s")
    rates, threads = cpu_with_threads(pid, window_s, max(1, round(cpu_s / window_s)))
    side.quiet_cpu, side.quiet_threads = rates, [threads]
    runs = run_turns(h, subject, pid, turns)
    side.add(runs)
    return side


def run_turns(h: Harness, subject: Subject, pid: int, count: int) -> Side:
    """`count` turns, one every TURN_PERIOD_S: CPU, reply to sound and gaps of each."""
    h.configure(reply_seconds=TURN_REPLY_S)
    speech = pcm.from_float(marker(SPEECH_S, MIC_RATE, level=0.3))
    side = Side()
    before, began = thread_cpu(pid), time.monotonic()
    for n in range(1, count + 1):
        start, cpu = time.monotonic(), cpu_seconds(pid)
        recorder = h.loopback.record(REPLY_RATE)
        try:
            recorder.wait_started()
            heard_at, gaps = _one_turn(h, subject, speech, recorder)
        finally:
            recorder.stop()
        side.reply_to_sound.append(heard_at)
        side.gaps.append(gaps)
        time.sleep(max(0.0, start + TURN_PERIOD_S - time.monotonic()))
        side.turn_cpu.append((cpu_seconds(pid) - cpu) / (time.monotonic() - start) * 60)
        if n % 5 == 0 or n == count:
            progress(f"turns {n}/{count}")
    side.turn_threads = [thread_split(before, thread_cpu(pid), time.monotonic() - began)]
    return side


def _one_turn(h: Harness, subject: Subject, speech: bytes, recorder: Recorder) -> tuple[float, int]:
    """Speak once; (ms from the first reply chunk to sound, gaps heard in the reply)."""
    spoke = time.monotonic()
    player = h.loopback.play(speech, MIC_RATE)
    try:
        h.wait(lambda: h.first("turn_complete", "out", spoke) is not None, TURN_TIMEOUT_S,
               "a reply", subject)
    finally:
        player.stop()
    done = h.first("turn_complete", "out", spoke)
    reply = h.first("audio", "out", spoke)
    if reply is None or done is None:
        raise BenchError("a turn ended without reply audio")
    sent = h.entries(direction="out")
    chunks = [e.data or b"" for e in sent if e.kind == "audio" and reply.t <= e.t <= done.t]
    seconds = sum(len(c) for c in chunks) / 2 / REPLY_RATE
    wait_for(lambda: recorder.first_sound(after=reply.t, threshold_dbfs=SOUND_DBFS) is not None,
              "the reply at the loopback speaker")
    heard = recorder.first_sound(after=reply.t, threshold_dbfs=SOUND_DBFS)
    assert heard is not None
    wait_for(lambda: recorder.chunks[-1][0] >= heard + seconds + 0.1,
              "the end of the reply at the loopback speaker", timeout=seconds + 5)
    return ms(heard - reply.t), count_gaps(recorder, heard, seconds)


def count_gaps(recorder: Recorder, start: float, seconds: float) -> int:
    """Silences of GAP_MS or more in the recording from `start` for `seconds` (less the
    reply's own 2 ms fade at the end)."""
    samples, times = recorder.timeline()
    inside = samples[(times >= start) & (times < start + seconds - 0.005)]
    return len(quiet_runs(inside, round(GAP_MS * recorder.rate / 1000)))


def quiet_runs(samples: np.ndarray, shortest: int) -> list[tuple[int, int]]:
    """(start, length) of every run of at least `shortest` samples at or below -40 dBFS."""
    quiet = np.abs(samples) <= pcm.db_to_amplitude(SOUND_DBFS)
    edges = np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(int(s), int(e - s)) for s, e in zip(starts, ends, strict=True) if e - s >= shortest]


def barge_ins_by_voice(h: Harness, subject: Subject, count: int, seed: int = 2) -> list[float]:
    """Speak into a playing reply; ms from the server's `interrupted` to silence.

    For a client that has no button (the reference): the server stops its reply
    when it hears the new speech, and says so; the client must then fall silent.
    Each burst of speech interrupts one reply and asks for the next.
    """
    rng = random.Random(seed)
    h.configure(reply_seconds=BARGE_REPLY_S)
    speech = pcm.from_float(marker(SPEECH_S / 2, MIC_RATE, level=0.3))
    after = time.monotonic()  # the next reply is the first audio after this
    h.loopback.play(speech, MIC_RATE).wait()
    results = []
    for n in range(1, count + 1):
        silent_ms, after = _barge_in(h, subject, speech, after, rng.uniform(0.2, 0.5))
        results.append(silent_ms)
        if n % 10 == 0 or n == count:
            progress(f"barge-ins by voice {n}/{count}")
    last = _next_reply(h, subject, after)
    h.wait(lambda: h.first("turn_complete", "out", last) is not None, TURN_TIMEOUT_S,
           "the last reply to end", subject)
    return results


def _barge_in(
    h: Harness, subject: Subject, speech: bytes, after: float, into_s: float
) -> tuple[float, float]:
    """Speak `into_s` into the first reply after `after`: (ms to silence, the interruption)."""
    recorder = h.loopback.record(REPLY_RATE)
    try:
        recorder.wait_started()
        reply = _next_reply(h, subject, after)
        wait_for(
            lambda: recorder.first_sound(after=reply) is not None,
            "the reply at the loopback speaker",
        )
        time.sleep(into_s)
        spoke = time.monotonic()
        player = h.loopback.play(speech, MIC_RATE)
        h.wait(
            lambda: h.first("interrupted", "out", spoke) is not None,
            TURN_TIMEOUT_S,
            "the server to interrupt its reply",
            subject,
        )
        player.wait()
        interrupted = h.first("interrupted", "out", spoke)
        assert interrupted is not None
        return silence_after(recorder, interrupted.t, "the interruption"), interrupted.t
    finally:
        recorder.stop()


def _next_reply(h: Harness, subject: Subject, after: float) -> float:
    """When the first reply audio after `after` left the server."""
    h.wait(lambda: h.first("audio", "out", after) is not None, TURN_TIMEOUT_S, "a reply", subject)
    reply = h.first("audio", "out", after)
    assert reply is not None
    return reply.t


@dataclass
class Comparison:
    """The box and the reference in the same phases, and what only one of them can show."""

    box: Side = field(default_factory=Side)
    reference: Side = field(default_factory=Side)
    underflows: int = 0  # PortAudio's output underflows in the box's turns, audio waiting
    starved: int = 0  # ... and the times the device ran out because the reply came late
    reference_barge: list[float] = field(default_factory=list)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)

    def count_run_outs(self, before: tuple[int, int], after: tuple[int, int]) -> None:
        self.underflows += after[0] - before[0]
        self.starved += after[1] - before[1]


def side_by_side(
    h: Harness, turns: int, cpu_s: float, window_s: float, *, barge_ins: int = 0
) -> Comparison:
    """Both clients, each started afresh for each half, in the order box, reference,
    reference, box: a drift in the machine's own load falls on both alike."""
    out = Comparison()
    halves = [(turns + 1) // 2, turns // 2]
    for n, who in enumerate(("box", "reference", "reference", "box")):
        half = halves[n // 2]
        if who == "box":
            out.box.add(_box(h, out, half, cpu_s / 2, window_s))
        else:
            out.reference.add(_reference(h, out, half, cpu_s / 2, window_s,
                                         barge_ins if n == 2 else 0))
    return out


def _box(h: Harness, out: Comparison, turns: int, cpu_s: float, window_s: float) -> Side:
    progress("the box, hands-free")
    d = h.start(HANDS_FREE)
    try:
        open_conversation(h, d)
        before = d.speaker_run_outs()
        side = measure(h, d, d.pid, turns, cpu_s, window_s) if turns else Side()
        out.count_run_outs(before, d.speaker_run_outs())
        out.peak_rss_mb["box_hands_free"] = max(
            out.peak_rss_mb.get("box_hands_free", 0.0), d.peak_rss_mb()
        )
        return side
    finally:
        d.stop()


def _reference(
    h: Harness, out: Comparison, turns: int, cpu_s: float, window_s: float, barge_ins: int
) -> Side:
    progress("the reference client")
    client = h.start_reference()
    try:
        side = measure(h, client, client.pid, turns, cpu_s, window_s) if turns else Side()
        if barge_ins:
            out.reference_barge = barge_ins_by_voice(h, client, barge_ins)
        out.peak_rss_mb["reference"] = max(out.peak_rss_mb.get("reference", 0.0),
                                           client.peak_rss_mb())
        return side
    finally:
        client.stop()


def beside_busy_cores(h: Harness, turns: int) -> Comparison:
    """Turns on both clients with one busy process per core running beside them."""
    out = Comparison()
    with busy_cores() as spinners:
        progress(f"{len(spinners)} busy processes started beside the clients")
        d = h.start(HANDS_FREE)
        try:
            open_conversation(h, d)
            before = d.speaker_run_outs()
            out.box = run_turns(h, d, d.pid, turns)
            out.count_run_outs(before, d.speaker_run_outs())
        finally:
            d.stop()
        client = h.start_reference()
        try:
            out.reference = run_turns(h, client, client.pid, turns)
        finally:
            client.stop()
    return out
