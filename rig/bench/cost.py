"""What the daemon costs a small computer: CPU per minute idle and streaming, start-up,
and what `arecord` costs beside it, the floor of any program that keeps a microphone open."""

from __future__ import annotations

import subprocess
import time

from device.audio import pcm
from device.live.wire import MIC_RATE
from rig.bench.harness import BenchDaemon, BenchError, Harness, progress
from rig.bench.markers import marker
from rig.bench.proc import cpu_per_minute, cpu_with_threads_each
from rig.bench.turns import TURN_TIMEOUT_S

SETTLE_S = 2.0  # after a session closes or streaming starts, before counting


def idle_beside_arecord(
    h: Harness, d: BenchDaemon, period_ms: int, seconds: float, window_s: float
) -> tuple[tuple[list[float], dict[str, float]], tuple[list[float], dict[str, float]]]:
    """CPU s/min per window, and by thread, of the daemon waiting for a press with no
    session open, and of a plain C `arecord` recording the loopback microphone to nowhere
    at `period_ms` beside it, in the same windows: what the sound card costs any program
    before it does anything. (Measured one after the other, arecord's own figure moved
    from 0.4 to 1.0 s/min between runs with the machine's load.)"""
    h.wait(h.no_session, TURN_TIMEOUT_S, "the session to close", d)
    argv = [
        "arecord", "-q", "-D", "default", "-t", "raw", "-f", "S16_LE", "-c", "1",
        "-r", str(MIC_RATE), f"--period-time={period_ms * 1000}", "/dev/null",
    ]
    proc = subprocess.Popen(argv, env=h.loopback.child_env(), stdin=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        time.sleep(SETTLE_S)
        if proc.poll() is not None:
            raise BenchError(f"arecord exited with {proc.returncode}: {proc.communicate()[1]!r}")
        progress(f"idle CPU beside arecord for {seconds:.0f} s")
        windows = max(1, round(seconds / window_s))
        idle, arecord = cpu_with_threads_each([d.pid, proc.pid], window_s, windows)
        return idle, arecord
    finally:
        proc.terminate()
        proc.wait()


def streaming_cpu(
    h: Harness, d: BenchDaemon, seconds: float, window_s: float
) -> tuple[list[float], dict[str, float]]:
    """CPU s/min per window while the button is held and noise plays into the microphone.

    Returns the rates and what reached the server meanwhile (audio seconds and
    video frames per second of the measured time), the proof it streamed.
    """
    h.wait(h.no_session, TURN_TIMEOUT_S, "the session to close", d)
    noise = pcm.from_float(marker(seconds + SETTLE_S + 3, MIC_RATE, level=0.3))
    player = h.loopback.play(noise, MIC_RATE)
    try:
        pressed = d.press()
        h.wait(lambda: h.first("audio", "in", pressed) is not None, 10, "streaming to start", d)
        time.sleep(SETTLE_S)
        progress(f"streaming CPU for {seconds:.0f} s")
        start = time.monotonic()
        rates = cpu_per_minute(d.pid, window_s, max(1, round(seconds / window_s)))
        end = time.monotonic()
        d.release()
    finally:
        player.stop()
    received = [e for e in h.entries(direction="in") if start <= e.t <= end]
    audio_s = sum(len(e.data or b"") for e in received if e.kind == "audio") / 2 / MIC_RATE
    frames = sum(1 for e in received if e.kind == "video")
    took = end - start
    return rates, {"audio_s_per_s": audio_s / took, "frames_per_s": frames / took}


def start_to_ready(h: Harness, starts: int) -> list[BenchDaemon]:
    """`starts` fresh daemons, each stopped once READY (their `ready_s` is the figure)."""
    daemons = []
    for n in range(1, starts + 1):
        d = h.start()
        d.stop()
        daemons.append(d)
        progress(f"starts {n}/{starts}")
    return daemons
