"""Talking to the box hands-free with its speaker in the same box: what the echo canceller
does for the person, and what it costs.

The rig's acoustic path (`rig.acoustic`) carries the loopback speaker back into the
loopback microphone; the local server replies with a recorded voice (espeak-ng) and
its voice detector interrupts a reply at the first loud 20 ms frame it hears, the
box's own voice included. The measurements are `rig.bench.hands_free`'s; this is
the phase that runs them (`python -m rig.bench.echo [--quick] [--out PATH]`, apart from
`scripts/bench`: it takes twelve minutes) and the figures they give.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device.audio import pcm
from device.audio.echo import ECHO_LATENCY_S, RESTING_S
from device.live.wire import REPLY_RATE
from rig.acoustic import AcousticPath, Room
from rig.bench.canceller_latency import chunk_waits
from rig.bench.figures import Figure, median, nearest_rank
from rig.bench.hands_free import (
    CONVERGED_S,
    SPEECH_DBFS,
    Conversation,
    EchoReplies,
    TalkOvers,
    echo_replies,
    quiet_cpu,
    reply_cpu,
    speech_to_noise,
    talk_overs,
)
from rig.bench.harness import Harness, progress
from rig.daemon import scratch_dir
from rig.echo_tap import all_calls, held_by_guard
from rig.speech import said

DIRECT = Room(delay_ms=10, gain_db=-6)  # a small box: its speaker 6 dB down at the microphone
REVERB = Room(delay_ms=10, gain_db=-6, reverb_ms=400)  # the same in a small room
FAN = Room(gain_db=None, fan_dbfs=-45)  # no reply plays during a push-to-talk turn
REPLY_DBFS = -22.0  # the box's voice: its peaks near -3 dBFS
NOT_MEASURED = float("nan")  # every reply of a kind was cut short: nothing to measure
ANSWER = (
    "Tomorrow will be sunny with a light breeze from the west, and temperatures will rise "
    "to around twenty two degrees in the afternoon. In the evening clouds gather over the "
    "hills, and there may be a short shower before midnight. The weekend looks warm."
)
HANDS_FREE: dict[str, dict[str, Any]] = {
    "button": {"mode": "toggle"},
    "conversation": {"silence_ms": 400, "idle_timeout_s": 600, "end_after_silence_s": 600},
}


@dataclass(frozen=True)
class EchoPlan:
    """How much to measure: the full plan takes about twelve minutes."""

    replies: int = 20  # long replies with nobody talking (direct path)
    reverb_replies: int = 10
    reply_s: float = 8.0
    talk_overs: int = 10
    latency_s: float = 4.0  # each opening of the capture, with and without the canceller
    cpu_s: float = 60.0
    fan_turns: int = 10

    @classmethod
    def quick(cls) -> EchoPlan:
        return cls(replies=2, reverb_replies=1, reply_s=4.0, talk_overs=2, latency_s=2.0,
                   cpu_s=4.0, fan_turns=2)  # fmt: skip


# -- the phase, and its figures ----------------------------------------------------------------


@dataclass
class Costs:
    """What one setting of mic_during_playback costs: CPU s/min while a reply plays and
    while all is quiet."""

    reply_cpu: list[float]
    quiet_cpu: list[float]


@dataclass
class EchoResults:
    direct: EchoReplies
    reverb: EchoReplies
    talk: TalkOvers
    cancel: Costs
    open: Costs
    snr_plain: list[float]
    snr_suppressed: list[float]
    #: Per opening of the capture, in turn: ms from each chunk's last sample to the loop
    #: with no cleaner, and the same with the canceller working.
    waits: list[tuple[list[float], list[float]]]


def measure(h: Harness, plan: EchoPlan, taps: Path | None = None) -> EchoResults:
    """Run every echo measurement on the shared loopback and server; `taps`: where to keep
    the canceller's recordings of replies that interrupted themselves."""
    voice = pcm.from_float(said(ANSWER, REPLY_DBFS, REPLY_RATE))
    h.configure(voice=voice, reply_seconds=plan.reply_s, setup_delay=0.0)
    try:
        with AcousticPath(h.loopback, DIRECT):
            direct, talk, cancel = _hands_free(h, plan, "cancel", taps=taps)
            _, _, open_ = _hands_free(h, plan, "open", replies=False)
        with AcousticPath(h.loopback, REVERB):
            reverb, *_ = _hands_free(
                h, plan, "cancel", costs=False, count=plan.reverb_replies, taps=taps
            )
        h.configure(voice=None, reply_seconds=0.3)
        with AcousticPath(h.loopback, FAN):
            snr = {}
            for suppress in (False, True):
                d = h.start({"audio": {"noise_suppression": suppress}})
                try:
                    progress(f"speech over a fan, noise suppression {suppress}")
                    snr[suppress] = speech_to_noise(h, d, plan.fan_turns)
                finally:
                    d.stop()
    finally:
        h.configure(voice=None)
    reference = np.frombuffer(voice, dtype=np.int16)
    waits = chunk_waits(h.loopback, reference, REPLY_RATE, plan.latency_s)
    return EchoResults(direct, reverb, talk, cancel, open_, snr[False], snr[True],
                       waits)  # fmt: skip


def _hands_free(
    h: Harness, plan: EchoPlan, mode: str, replies: bool = True, costs: bool = True,
    count: int | None = None, taps: Path | None = None,
) -> tuple[EchoReplies, TalkOvers, Costs]:  # fmt: skip
    """`taps`: where to keep the canceller's recording of a conversation in which the box
    interrupted itself (`rig.echo_tap`), to replay it offline; the recordings also tell
    how long the canceller's guard held back a person talking over a reply."""
    # Every chunk goes to the server, silence too (no quiet gate), so that what is left
    # of the box's voice can be measured there.
    settings = {**HANDS_FREE, "audio": {"mic_during_playback": mode, "pause_below_dbfs": -100}}
    tap = scratch_dir("bench-tap-") if taps is not None and mode == "cancel" else None
    try:
        echo, talk, spent = _converse(h, plan, mode, settings, replies, costs, count, tap)
        if tap is not None and taps is not None:
            calls = all_calls(tap)
            talk.held_ms = [1000 * held for onset, until in talk.moments
                            if (held := held_by_guard(calls, onset, until)) is not None]
            echo.recordings = _kept(echo.recordings, taps)
        return echo, talk, spent
    except BaseException:
        if tap is not None and taps is not None:  # a phase that failed: keep all it recorded
            taps.mkdir(parents=True, exist_ok=True)
            shutil.move(tap, taps / tap.name)
            progress(f"the canceller's recordings of the failed phase: {taps / tap.name}")
        raise
    finally:
        if tap is not None:
            shutil.rmtree(tap, ignore_errors=True)


def _converse(
    h: Harness, plan: EchoPlan, mode: str, settings: dict[str, dict[str, Any]],
    replies: bool, costs: bool, count: int | None, tap: Path | None,
) -> tuple[EchoReplies, TalkOvers, Costs]:  # fmt: skip
    """One daemon's share of the phase."""
    d = h.start(settings, tap=tap)
    c = Conversation(h, d, tap)
    try:
        echo, talk, spent = EchoReplies(), TalkOvers(), Costs([], [])
        if replies:
            echo = echo_replies(c, count or plan.replies, plan.reply_s)
        if replies and costs:
            talk = talk_overs(c, plan.talk_overs)
        if costs:
            progress(f"CPU, mic_during_playback = {mode}")
            # Quiet first: once `open` has spoken, its own echo keeps the server answering.
            spent.quiet_cpu = quiet_cpu(c, plan.cpu_s / 2)
            h.configure(reply_seconds=plan.cpu_s + 2)
            spent.reply_cpu = reply_cpu(c, plan.cpu_s)
            h.configure(reply_seconds=plan.reply_s)
        return echo, talk, spent
    finally:
        c.close()
        d.stop()


def _kept(recordings: list[tuple[Path, float]], taps: Path) -> list[tuple[Path, float]]:
    """The recordings moved to `taps`, out of the daemon's scratch directory."""
    if recordings:
        taps.mkdir(parents=True, exist_ok=True)
    moved = {p: taps / p.name for p, _ in recordings}
    for old, new in moved.items():
        shutil.move(old, new)
    return [(moved[p], t) for p, t in recordings]


def figures(r: EchoResults, barge_in: list[float] | None, loop_ms: list[float]) -> list[Figure]:
    """The echo figures in report order; `barge_in` is push-to-talk's, for comparison."""
    def p95(samples: list[float]) -> float:
        return nearest_rank(samples, 95)

    def p05(samples: list[float]) -> float:
        return -nearest_rank([-s for s in samples], 95)

    silent_limit = (p95(barge_in) if barge_in else p95(loop_ms) + 20)
    added_cpu = float(median(r.cancel.reply_cpu) / median(r.open.reply_cpu))
    quiet_cpu_ratio = float(median(r.cancel.quiet_cpu) / median(r.open.quiet_cpu))
    added_latency = [float(median(cancel) - median(open_)) for open_, cancel in r.waits]
    waits_open = [w for open_, _ in r.waits for w in open_]
    waits_cancel = [w for _, cancel in r.waits for w in cancel]
    held_ms = ECHO_LATENCY_S * 1000  # what the canceller holds back, noise suppression off
    replies = r.direct.replies + r.reverb.replies
    talk = r.talk
    return [
        Figure("erle_direct", "echo reduction at the server, direct path", "dB",
               f"Replies of espeak-ng speech played while the speaker sink is carried back into "
               f"the microphone sink ({DIRECT.gain_db} dB, {DIRECT.delay_ms} ms) and nobody "
               f"talks: the power the microphone sink carried from {CONVERGED_S:g} s into each "
               "reply to its end over the power of what the server received meanwhile.",
               r.direct.erle_db or [NOT_MEASURED], target=">= 30 dB",
               met=bool(r.direct.erle_db) and bool(p05(r.direct.erle_db) >= 30),
               note="The 5th percentile is the one judged: the worst replies matter."),
        Figure("erle_reverb", "echo reduction at the server, with a room", "dB",
               f"The same through a {REVERB.reverb_ms} ms reverberation (TAP Reverberator).",
               r.reverb.erle_db or [NOT_MEASURED], target=">= 20 dB",
               met=bool(r.reverb.erle_db) and bool(p05(r.reverb.erle_db) >= 20)),
        Figure("false_interruptions", "false interruptions by its own voice", "replies",
               f"Replies of {replies} the server interrupted (its voice detector took the "
               "box's own voice for speech), direct path and room together.",
               [float(r.direct.interruptions + r.reverb.interruptions)], target="0",
               met=r.direct.interruptions + r.reverb.interruptions == 0,
               note=f"Seconds into the reply: direct path {r.direct.interrupted_at or 'none'}, "
               f"with a room {r.reverb.interrupted_at or 'none'}." + "".join(
                   f" Replay: python -m rig.echo_tap replay {path} --at {t:.3f}"
                   for path, t in r.direct.recordings + r.reverb.recordings),
               details={"direct_s": r.direct.interrupted_at,
                        "room_s": r.reverb.interrupted_at}),
        Figure("talk_over_voiced", "talking over a reply: speech the server heard", "%",
               "A sentence said into the microphone 2 s into a reply: of its 20 ms frames "
               "louder than the server's voice threshold as said, the share that were louder "
               "than it in what the server received (aligned by cross-correlation).",
               [v * 100 for v in talk.voiced] or [0.0], target=">= 90 %",
               met=bool(talk.voiced) and bool(min(talk.voiced) >= 0.9) and not talk.missed,
               note=f"{talk.missed} sentence(s) never interrupted the reply."),
        Figure("talk_over_detect", "  of which: speech onset to the server's interrupted", "ms",
               "From the sentence's first voiced frame at the microphone sink to the server "
               f"sending interrupted: one 40 ms chunk, the canceller's {held_ms:g} ms and the "
               "detector's 20 ms frame are its own detection time.",
               talk.detect_ms or [0.0], target=f"p95 <= 40 + {held_ms:g} + 20 ms + loopback",
               met=bool(talk.detect_ms)
               and bool(p95(talk.detect_ms) <= 60 + held_ms + p95(loop_ms))),
        Figure("talk_over_held", "  of which: held back by the canceller's guard", "ms",
               "From the person's first frame WebRTC's module let through loud enough for "
               "the server to the first such frame the canceller's guard sent on (the "
               "daemon's own recording, rig.echo_tap), in 10 ms frames; the rest of the onset "
               "is the module's.",
               talk.held_ms or [NOT_MEASURED],
               note=f"{len(talk.held_ms)} of {len(talk.moments)} sentences measured (the "
               "others: nothing loud out of the module, or sent, before the interruption)."),
        Figure("talk_over_silent", "  of which: interrupted to silence at the speaker", "ms",
               "From the server sending interrupted to the sample after the last one above "
               "-40 dBFS in the recording of the speaker sink.",
               talk.silent_ms or [0.0], target="p95 <= push-to-talk barge-in p95",
               met=bool(talk.silent_ms) and bool(p95(talk.silent_ms) <= silent_limit)),
        Figure("echo_cpu", "CPU while a reply plays, cancel / open", "ratio",
               "CPU s/min of the daemon (its CPU-time clock) while a reply plays and the "
               "microphone streams, with mic_during_playback = cancel over the same with "
               "open (both send everything; open does nothing about the echo). The cancel "
               "daemon also records its canceller (rig.echo_tap): about 0.02 s/min of it.",
               [added_cpu], note=f"cancel {median(r.cancel.reply_cpu):.2f} s/min, open "
               f"{median(r.open.reply_cpu):.2f} s/min." if r.open.reply_cpu else "",
               details={"cancel": r.cancel.reply_cpu, "open": r.open.reply_cpu}),
        Figure("echo_quiet_cpu", "CPU with nobody talking and the box silent, cancel / open",
               "ratio",
               "The same clock with the conversation open, the box silent for 2 s and nobody "
               "talking (the canceller rests once the speaker has been quiet for "
               f"{RESTING_S:g} s).",
               [quiet_cpu_ratio], note=f"cancel {median(r.cancel.quiet_cpu):.2f} s/min, open "
               f"{median(r.open.quiet_cpu):.2f} s/min." if r.open.quiet_cpu else "",
               details={"cancel": r.cancel.quiet_cpu, "open": r.open.quiet_cpu}),
        Figure("echo_latency", "capture latency added by the canceller", "ms",
               "The box's capture on the loopback microphone (rig.bench.canceller_latency): "
               "from each chunk's last sample, by the sound card's clock, to the chunk on the "
               "event loop; the median with the canceller working (a reply as its reference) "
               "less the median without, for each of "
               f"{len(r.waits)} pairs of openings in turn (each opening waits at a phase of its "
               f"own). The canceller holds back {held_ms:g} ms.",
               added_latency, target="<= 10 ms", met=bool(median(added_latency) <= 10),
               note=f"cancel {median(waits_cancel):.1f} / {p95(waits_cancel):.1f} ms, "
               f"open {median(waits_open):.1f} / {p95(waits_open):.1f} ms (median / p95, "
               "all openings).",
               details={"cancel": [c for _, c in r.waits], "open": [o for o, _ in r.waits]}),
        Figure("fan_snr_plain", "speech over a fan at the server, no noise suppression", "dB",
               f"Push-to-talk turns of a sentence at {SPEECH_DBFS:g} dBFS over steady pink "
               f"noise at {FAN.fan_dbfs:g} dBFS: the sentence's voiced frames over the noise "
               "alone before it, in what the server received.", r.snr_plain),
        Figure("fan_snr_suppressed", "speech over a fan at the server, noise suppression", "dB",
               "The same with [audio] noise_suppression = true.", r.snr_suppressed),
    ]  # fmt: skip


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m rig.bench.echo",
        description=(
            "Measure hands-free talk with the speaker in the box: the rig carries the "
            "loopback speaker back into the microphone and the box runs with each "
            "mic_during_playback setting (about fifteen minutes). Nothing else should run "
            "meanwhile."
        ),
    )
    parser.add_argument(
        "--out", type=Path, default=Path("bench-echo.json"), metavar="PATH",
        help="where to write the JSON results (default: bench-echo.json)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run of a few minutes: fewer replies"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """The echo phase alone, with the loopback's latency and push-to-talk's barge-in
    measured beside it for the targets."""
    from rig.bench import report
    from rig.bench.run import BARGE_REPLY_S, REPLY_S
    from rig.bench.turns import TurnRunner
    from rig.loopback import PulseLoopback, measure_latency
    from rig.server.server import ServerThread

    args = parse(argv)
    quick = args.quick
    plan = EchoPlan.quick() if quick else EchoPlan()
    before = report.machine()
    with PulseLoopback() as loopback, ServerThread(reply_seconds=REPLY_S) as server:
        h = Harness(loopback, server)
        loop_ms = [s * 1000 for s in measure_latency(loopback, repeats=5 if quick else 20)]
        d = h.start()
        try:
            h.configure(reply_seconds=BARGE_REPLY_S)
            barge = TurnRunner(h, d).barge_ins(3 if quick else 10)
        finally:
            d.stop()
        results = measure(h, plan, taps=args.out.with_suffix(".taps"))
    found = figures(results, barge, loop_ms)
    report.publish(args.out, found, before, {"echo": plan.__dict__})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
