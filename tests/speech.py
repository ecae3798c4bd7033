"""What the rig tests say into the microphone, and how they check what came out of the daemon."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from device.audio import pcm
from rig.daemon import Daemon
from rig.loopback import PulseLoopback
from rig.server.server import ServerThread
from rig.server.voice import tone_frequency

MIC_RATE = 16000
SPEAKER_RATE = 24000


def chirp(seconds: float, rate: int = MIC_RATE, f0: float = 300.0, f1: float = 3000.0) -> bytes:
    """A sweep: its cross-correlation has one sharp peak, so alignment is unambiguous."""
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    ramp = np.minimum(1.0, np.minimum(t, seconds - t) / 0.005)
    return pcm.from_float(0.5 * np.sin(phase) * ramp)


#: How much of the speech's start (and end) is matched to find it in the recording,
#: longest first: a player that runs dry within one puts silence in it, and a shorter
#: stretch before (or after) the gap is then what is found.
EDGES_S = (0.2, 0.1, 0.05, 0.025)


def spoken_span(heard: bytes, sent: bytes) -> np.ndarray:
    """The stretch of `heard` from the first sample of `sent` to its last.

    Found by its head and its tail, not as one piece: on a busy machine the player
    (pacat) can run dry and the sound server then puts a few milliseconds of silence
    into the speech. Every recording of the microphone carries that gap alike, so it
    stays in, and the daemon is held to the microphone as it was.
    """
    carried, played = pcm.to_float(heard), pcm.to_float(sent)
    assert len(carried) >= len(played), "the microphone's recording misses the speech"
    start, _ = _edge(carried, played, "start")
    tail_at, edge = _edge(carried[start:], played, "end")
    span = carried[start : start + tail_at + edge]
    assert 0.9 * len(played) <= len(span) <= len(played) + MIC_RATE, (
        f"the microphone carried {len(span)} samples of speech for {len(played)} played"
    )
    return span


def _edge(carried: np.ndarray, played: np.ndarray, which: str) -> tuple[int, int]:
    """Where the speech's `which` edge starts in `carried`, and how long a stretch matched."""
    best = 0.0
    for edge_s in EDGES_S:
        edge = min(len(played) // 2, int(edge_s * MIC_RATE))
        at, corr = pcm.find_offset(carried, played[:edge] if which == "start" else played[-edge:])
        if corr > 0.9:
            return at, edge
        best = max(best, corr)
    raise AssertionError(f"the speech's {which} is not in the microphone's recording ({best:.2f})")


def assert_received_whole(received: bytes, sent: bytes, heard: bytes) -> None:
    """`sent`, as the microphone carried it, is in `received` from first sample to last,
    with no gap or repeat.

    `heard` is the loopback's recording of the microphone from before the speech
    (`PulseLoopback.heard`): a glitch of the sound server's own is in it too, and
    is not the daemon's to answer for.
    """
    want = spoken_span(heard, sent)
    got = pcm.to_float(received)
    assert len(got) >= len(want), f"server got {len(got)} samples, less than the {len(want)} played"
    offset, _ = pcm.find_offset(got, want)
    segment = got[offset : offset + len(want)]
    assert len(segment) == len(want), "the end of the speech is missing"
    window = MIC_RATE // 10
    quiet = pcm.db_to_amplitude(-60.0) * np.sqrt(window)
    for start in range(0, len(want) - window + 1, window):
        a, b = want[start : start + window], segment[start : start + window]
        where = f"speech {start / MIC_RATE:.1f} s in"
        if np.linalg.norm(a) < quiet:  # a gap the sound server put in (spoken_span)
            assert np.linalg.norm(b) < 2 * quiet, f"{where}: silence on the microphone, sound sent"
            continue
        corr = pcm.similarity(a, b)
        assert corr > 0.9, f"{where} differs (correlation {corr:.2f})"


def speak_turn(
    loopback: PulseLoopback, daemon: Daemon, speech: bytes, pause_s: float = 0.15
) -> float:
    """Press, speak, wait `pause_s` after the last sound, release; returns the press time."""
    pressed = time.monotonic()
    daemon.ctl("press")
    loopback.play(speech, MIC_RATE).wait()
    time.sleep(pause_s)
    daemon.ctl("release")
    return pressed


def turns_done(n: int) -> Any:
    """A `Daemon.wait_until` check: back in idle after turn `n` (counted since start)."""
    return lambda s: s["state"] == "idle" and bool(s["turns"]) and s["turns"][-1]["turn"] >= n


def talk_over(loopback: PulseLoopback, daemon: Daemon, turn: int, within: float = 20) -> float:
    """Press during a reply, speak, release, wait until turn `turn` has ended (counted
    since start); returns the time of the press."""
    pressed = time.monotonic()
    daemon.ctl("press")
    time.sleep(0.8)
    loopback.play(chirp(0.5), MIC_RATE).wait()
    daemon.ctl("release")
    daemon.wait_until(turns_done(turn), within, f"turn {turn}, after the barge-in, to end")
    time.sleep(0.2)
    return pressed


def speaker_during_turn(loopback: PulseLoopback, daemon: Daemon, within: float = 20) -> bytes:
    """Speak the first push-to-talk turn; what the loopback speaker played until it ended."""
    recorder = loopback.record(SPEAKER_RATE)
    recorder.wait_started()
    speak_turn(loopback, daemon, chirp(0.5))
    daemon.wait_until(turns_done(1), within, "the turn to end")
    time.sleep(0.2)
    return recorder.stop()


FRAME_S = 0.02
#: A frame is reply `turn`'s if its pitch carries more than this of its energy: a
#: frame with a gap in it (a late chunk) is nobody's, not the nearest pitch's.
TONE_SHARE = 0.8


def tone_frames(recording: bytes, turn: int, floor_dbfs: float = -30) -> list[bytes]:
    """The 20 ms stretches of a speaker recording that carry reply `turn`'s tone."""
    size = int(SPEAKER_RATE * FRAME_S) * 2
    freq = tone_frequency(turn)
    frames = (recording[i : i + size] for i in range(0, len(recording) - size + 1, size))
    return [
        f
        for f in frames
        if pcm.rms_dbfs(f) > floor_dbfs
        and pcm.tone_share(f, SPEAKER_RATE, freq) > TONE_SHARE
    ]


def reply_heard(recording: bytes, turn: int, seconds: float) -> None:
    """The loopback speaker played reply `turn`: its pitch, for about its length."""
    loud = np.abs(pcm.to_float(recording)) > pcm.db_to_amplitude(-30)
    assert loud.any(), "nothing reached the speaker"
    heard_s = len(tone_frames(recording, turn)) * FRAME_S
    assert abs(heard_s - seconds) < 0.15, (
        f"heard {heard_s:.2f} s of the {tone_frequency(turn)} Hz reply, sent {seconds}"
    )


def assert_clean(daemon: Daemon, server: ServerThread) -> None:
    """No traceback, nothing leaked while running, and a clean exit with no task left."""
    assert server.server is not None
    assert daemon.open_connections(server.server.port) <= 1, "a connection to the service leaked"
    took = daemon.terminate()
    log = daemon.log()
    for bad in ("Traceback", "never retrieved", "left behind", "was destroyed"):
        assert bad not in log, f"{bad!r} in the daemon's log:\n{log}"
    assert daemon.proc.returncode == 0
    assert took < 2.0
