"""The whole benchmark: its phases in order, and the figures they give."""

from __future__ import annotations

from dataclasses import dataclass

from device.config import AudioConfig
from rig.bench import cost
from rig.bench.figures import Figure, median, nearest_rank
from rig.bench.harness import BenchDaemon, Harness, progress
from rig.bench.turns import ColdTurns, SpeechLoss, TurnRunner
from rig.loopback import PulseLoopback, measure_latency
from rig.server.server import ServerThread

CHUNK_MS = AudioConfig().chunk_ms  # the microphone chunk the daemon sends (its default)
PERIOD_MS = AudioConfig().period_ms  # the speaker's period the daemon runs with (its default)
SLOW_SETUP_S = 0.5
REPLY_S = 0.4  # the reply to a timed turn: short, but several chunks
BARGE_REPLY_S = 3.0  # long enough to be talked over


@dataclass(frozen=True)
class Plan:
    """How much to measure. The full plan takes eight to ten minutes."""

    turns: int = 20  # samples of each latency figure
    memory_turns: int = 50  # press/release turns the RSS growth is measured over
    starts: int = 10  # fresh daemons timed from start to READY
    cpu_s: float = 60.0  # each CPU figure's measuring time
    cpu_window_s: float = 10.0

    @classmethod
    def quick(cls, turns: int | None = None) -> Plan:
        """A smoke run: a few of everything, to keep the benchmark working."""
        turns = turns or 3
        return cls(turns=turns, memory_turns=turns, starts=1, cpu_s=2.0, cpu_window_s=1.0)


def run(plan: Plan) -> list[Figure]:
    """Measure everything on a fresh loopback and local server; the figures in report order."""
    with (
        PulseLoopback() as loopback,
        ServerThread(reply_seconds=REPLY_S) as server,
    ):
        h = Harness(loopback, server)
        progress("the loopback's own latency")
        loop_ms = [s * 1000 for s in measure_latency(loopback, repeats=plan.turns)]
        started = cost.start_to_ready(h, plan.starts)

        main = h.start()
        try:
            started.append(main)
            runner = TurnRunner(h, main)
            cold = runner.cold_turns(max(plan.turns, plan.memory_turns))
            h.configure(setup_delay=SLOW_SETUP_S)
            loss = runner.speech_loss(plan.turns, onset_delay=median(loop_ms) / 1000)
            h.configure(setup_delay=0.0, reply_seconds=BARGE_REPLY_S)
            barge = runner.barge_ins(plan.turns)
            h.configure(reply_seconds=REPLY_S)
            idle = cost.idle_cpu(h, main, plan.cpu_s, plan.cpu_window_s)
            audio, audio_flow = cost.streaming_cpu(h, main, plan.cpu_s, plan.cpu_window_s)
            output_latency = main.output_latency_ms
            peaks = {"audio_only": main.peak_rss_mb()}
        finally:
            main.stop()

        video_daemon = h.start({"camera": {"enabled": True, "source": "synthetic"}})
        try:
            started.append(video_daemon)
            video, video_flow = cost.streaming_cpu(h, video_daemon, plan.cpu_s, plan.cpu_window_s)
            peaks["camera"] = video_daemon.peak_rss_mb()
        finally:
            video_daemon.stop()

    return [
        *_press_figures(cold),
        _speech_loss_figure(loss),
        _release_figure(cold),
        _loopback_figure(loop_ms),
        _reply_figure(cold, loop_ms, output_latency),
        _barge_figure(barge, loop_ms, output_latency),
        *_cpu_figures(idle, audio, audio_flow, video, video_flow),
        *_memory_figures(cold, peaks, plan.memory_turns),
        _ready_figure(started),
    ]


def _p95_within(samples: list[float], limit: float) -> bool:
    return nearest_rank(samples, 95) <= limit


# -- figures ----------------------------------------------------------------------------


def _press_figures(cold: ColdTurns) -> list[Figure]:
    within_chunk = _p95_within(cold.setup_to_first_bytes, CHUNK_MS)
    return [
        Figure(
            "press_to_first_bytes",
            "press to first microphone bytes at the server",
            "ms",
            "From just before `ctl press` on an idle box with no session open to the server "
            "logging the first audio message of the new connection (setup answered at once).",
            cold.press_to_first_bytes,
            target=f"setup time + one chunk ({CHUNK_MS} ms)",
            met=within_chunk,
        ),
        Figure(
            "press_to_setup_complete",
            "  of which: press to setupComplete sent",
            "ms",
            "From the same press to the server sending setupComplete: connecting, TLS, the "
            "SDK's setup; the setup time the target above allows for.",
            cold.press_to_setup,
        ),
        Figure(
            "setup_complete_to_first_bytes",
            "  of which: setupComplete to first bytes",
            "ms",
            "From the server sending setupComplete to the server logging the first audio "
            "message on the same connection, per turn.",
            cold.setup_to_first_bytes,
            target=f"<= {CHUNK_MS} ms",
            met=within_chunk,
        ),
    ]


def _speech_loss_figure(loss: SpeechLoss) -> Figure:
    onset = loss.onset_after_press_ms
    return Figure(
        "speech_lost_at_press",
        f"speech lost at the press (setup {SLOW_SETUP_S * 1000:.0f} ms)",
        "ms",
        "A 600 ms noise marker is played into the loopback microphone to start at the press "
        f"while the server takes {SLOW_SETUP_S * 1000:.0f} ms to answer setup; the figure is "
        "the milliseconds of the marker, in 10 ms windows, that do not match (correlation "
        "< 0.9) the audio the server received between activityStart and activityEnd once the "
        "whole marker is aligned by cross-correlation, leaving out windows missing from a "
        "recording of the microphone sink itself.",
        loss.lost_ms,
        target="0 ms",
        met=max(loss.lost_ms) == 0,
        note=(
            f"The marker's onset at the microphone fell {median(onset):.1f} ms after the press "
            f"(median; from {min(onset):.1f} to {max(onset):.1f} ms), measured in a recording "
            "of the microphone sink."
        ),
        details={
            "onset_after_press_ms": onset,
            "lost_windows_ms": loss.lost_windows,
            "not_played_windows_ms": loss.not_played_windows,
        },
    )


def _release_figure(cold: ColdTurns) -> Figure:
    return Figure(
        "release_to_activity_end",
        "release to activityEnd at the server",
        "ms",
        "From just before `ctl release` to the server logging activityEnd, in the turns above.",
        cold.release_to_activity_end,
        target="p95 <= 40 ms",
        met=_p95_within(cold.release_to_activity_end, 40),
    )


def _loopback_figure(loop_ms: list[float]) -> Figure:
    return Figure(
        "loopback_latency",
        "loopback's own latency (pacat to parec)",
        "ms",
        "A click played by a fresh pacat into the speaker sink after 100 ms of silence, "
        "timed where the monitor recording shows it (rig.loopback.measure_latency): "
        "what the harness adds to the two figures below.",
        loop_ms,
    )


def _sound_target(figure: list[float], loop_ms: list[float]) -> tuple[str, bool]:
    limit = nearest_rank(loop_ms, 95) + 2 * PERIOD_MS
    return f"p95 <= loopback p95 + {2 * PERIOD_MS} ms", _p95_within(figure, limit)


def _share_note(samples: list[float], loop_ms: list[float], output_latency: float | None) -> str:
    share = median(samples) - median(loop_ms)
    reported = (
        f"; the daemon's PortAudio stream reports {output_latency:.1f} ms of output latency"
        if output_latency is not None
        else ""
    )
    return (
        f"Loopback alone: {median(loop_ms):.1f} ms median, so the daemon's own share is about "
        f"{share:.1f} ms{reported}."
    )


def _reply_figure(cold: ColdTurns, loop_ms: list[float], output_latency: float | None) -> Figure:
    target, met = _sound_target(cold.reply_to_sound, loop_ms)
    return Figure(
        "reply_to_sound",
        "reply to sound at the speaker",
        "ms",
        "From the server logging the first reply audio chunk sent to the first sample above "
        "-40 dBFS (the reply tone's 2 ms onset) in a recording of the loopback speaker, "
        "placed in time by each chunk's arrival.",
        cold.reply_to_sound,
        target=target,
        met=met,
        note=_share_note(cold.reply_to_sound, loop_ms, output_latency),
        details={"output_latency_ms": output_latency},
    )


def _barge_figure(barge: list[float], loop_ms: list[float], output_latency: float | None) -> Figure:
    target, met = _sound_target(barge, loop_ms)
    return Figure(
        "barge_in",
        "barge-in: press during a reply to silence",
        "ms",
        "From just before `ctl press` 200-500 ms into a playing reply to the sample after the "
        "last one above -40 dBFS in the recording of the loopback speaker.",
        barge,
        target=target,
        met=met,
        note=_share_note(barge, loop_ms, output_latency),
    )


def _cpu_figures(
    idle: list[float],
    audio: list[float],
    audio_flow: dict[str, float],
    video: list[float],
    video_flow: dict[str, float],
) -> list[Figure]:
    def flow(f: dict[str, float]) -> str:
        return (
            f"The server received {f['audio_s_per_s']:.2f} s of audio and "
            f"{f['frames_per_s']:.2f} frames per second meanwhile."
        )

    clock = "the process's CPU-time clock (all threads, user + system)"
    return [
        Figure(
            "cpu_idle",
            "CPU, idle, no session",
            "s/min",
            f"CPU seconds per minute from {clock}, in windows, while the daemon waits for a "
            "press with its microphone and speaker open and no session.",
            idle,
            target="< 0.1 s/min",
            met=_p95_within(idle, 0.1),
        ),
        Figure(
            "cpu_streaming_audio",
            "CPU, streaming audio",
            "s/min",
            "The same clock while the button is held and noise plays into the microphone, "
            "camera off.",
            audio,
            target="< 0.6 s/min",
            met=_p95_within(audio, 0.6),
            note=flow(audio_flow),
            details=audio_flow,
        ),
        Figure(
            "cpu_streaming_audio_video",
            "CPU, streaming audio + 1 FPS video",
            "s/min",
            "The same with the synthetic camera on: 768x768 JPEG frames at 1 FPS.",
            video,
            target="< 1.0 s/min",
            met=_p95_within(video, 1.0),
            note=flow(video_flow),
            details=video_flow,
        ),
    ]


def _memory_figures(cold: ColdTurns, peaks: dict[str, float], turns: int) -> list[Figure]:
    rss = cold.rss_mb
    last = min(turns, len(rss))
    growth = rss[last - 1] - rss[0]
    peak = max(peaks.values())
    return [
        Figure(
            "peak_rss",
            "memory: peak RSS",
            "MB",
            "VmHWM from /proc/PID/status at the end of each daemon's run (after all the turns, "
            "and after streaming with the camera), the larger of the two.",
            [peak],
            target="< 105 MB",
            met=peak < 105,
            details={"vmhwm_mb": peaks},
        ),
        Figure(
            "rss_growth",
            f"memory: RSS growth over {last} turns",
            "MB",
            f"VmRSS after turn {last} minus VmRSS after turn 1 of the press/release turns "
            "above (each one opens and closes a session).",
            [growth],
            target="< 5 MB",
            met=growth < 5,
            details={"rss_after_each_turn_mb": rss},
        ),
    ]


def _ready_figure(started: list[BenchDaemon]) -> Figure:
    waits = [d.microphone_wait_ms for d in started]
    known = [w for w in waits if w is not None]
    note = (
        f"Of which the daemon waited {median(known):.0f} ms (median) for the microphone's first "
        "audio, by its own status."
        if known
        else ""
    )
    ready_s = [d.ready_s for d in started]
    return Figure(
        "start_to_ready",
        "start to READY",
        "s",
        "From spawning `python -m device run` to READY=1 on its NOTIFY_SOCKET (a test "
        "datagram socket), for every daemon the benchmark started, with silence flowing "
        "through both loopback sinks as a real sound card moves from the start.",
        ready_s,
        target="< 2 s",
        met=_p95_within(ready_s, 2.0),
        note=note,
        details={"microphone_wait_ms": waits},
    )
