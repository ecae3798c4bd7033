"""The conversation end to end: the real daemon, the real SDK, the local server, loopback audio.

Each test drives the daemon as a person would (press, speak into the microphone,
release) through its control socket and checks what a person would notice:
the audio that reached the server, the sound at the speaker, the LED states.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device.audio import pcm
from device.sim.loopback import PulseLoopback
from device.sim.rig import Daemon, start_daemon
from device.sim.server import ServerThread
from device.sim.voice import tone_frequency

MIC_RATE = 16000
SPEAKER_RATE = 24000


def chirp(seconds: float, rate: int = MIC_RATE, f0: float = 300.0, f1: float = 3000.0) -> bytes:
    """A sweep: its cross-correlation has one sharp peak, so alignment is unambiguous."""
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    ramp = np.minimum(1.0, np.minimum(t, seconds - t) / 0.005)
    return pcm.from_float(0.5 * np.sin(phase) * ramp)


def assert_received_whole(received: bytes, sent: bytes) -> None:
    """`sent` appears in `received` from its first sample to its last, with no gap or repeat."""
    got, want = pcm.to_float(received), pcm.to_float(sent)
    assert len(got) >= len(want), f"server got {len(got)} samples, less than the {len(want)} played"
    offset, _ = pcm.find_offset(got, want)
    assert offset >= 0
    segment = got[offset : offset + len(want)]
    assert len(segment) == len(want), "the end of the speech is missing"
    window = MIC_RATE // 10
    for start in range(0, len(want) - window + 1, window):
        a, b = want[start : start + window], segment[start : start + window]
        corr = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))
        assert corr > 0.9, f"speech {start / MIC_RATE:.1f} s in differs (correlation {corr:.2f})"


@pytest.fixture
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # UNIX socket paths are short: keep them out of pytest's long tmp paths.
    import tempfile

    return Path(tempfile.mkdtemp(prefix="conv-"))


@pytest.fixture
def make_rig(loopback: PulseLoopback, workdir: Path) -> Iterator[Any]:
    """Start a server (with options) and the daemon (with settings) against the loopback."""
    started: list[tuple[ServerThread, Daemon]] = []

    def make(settings: dict[str, dict[str, Any]] | None = None, **server_options: Any):
        server = ServerThread(**server_options)
        server.start()
        assert server.server is not None
        daemon = start_daemon(workdir, loopback, server.server, settings=settings)
        started.append((server, daemon))
        daemon.wait_ready()
        return server, daemon

    yield make
    for server, daemon in started:
        daemon.terminate()
        server.stop()


def speak_turn(loopback: PulseLoopback, daemon: Daemon, speech: bytes) -> float:
    """Press, speak, release; returns the time of the press."""
    pressed = time.monotonic()
    daemon.ctl("press")
    loopback.play(speech, MIC_RATE).wait()
    time.sleep(0.15)  # the tail of the speech through the loopback
    daemon.ctl("release")
    return pressed


def turns_done(n: int):
    return lambda s: s["state"] == "idle" and len(s["turns"]) >= n


def between(kinds_and_entries: list[Any], first: str, last: str) -> bytes:
    """Audio the server received after the first `first` and before the first `last` after it."""
    out, inside = [], False
    for e in kinds_and_entries:
        if e.direction != "in":
            continue
        if e.kind == first and not inside:
            inside = True
        elif e.kind == last and inside:
            break
        elif e.kind == "audio" and inside:
            out.append(e.data)
    return b"".join(out)


def reply_heard(recording: bytes, turn: int, seconds: float) -> None:
    """The loopback speaker played reply `turn`: its pitch, for about its length."""
    samples = pcm.to_float(recording)
    loud = np.abs(samples) > pcm.db_to_amplitude(-30)
    assert loud.any(), "nothing reached the speaker"
    frame = SPEAKER_RATE // 50
    frames = [recording[i * 2 : (i + frame) * 2] for i in range(0, len(samples) - frame, frame)]
    freq = tone_frequency(turn)
    tone_frames = [
        f
        for f in frames
        if pcm.rms_dbfs(f) > -30 and abs(pcm.dominant_frequency(f, SPEAKER_RATE) - freq) < 60
    ]
    heard_s = len(tone_frames) * frame / SPEAKER_RATE
    assert abs(heard_s - seconds) < 0.15, (
        f"heard {heard_s:.2f} s of the {freq} Hz reply, sent {seconds}"
    )


def test_push_to_talk_turn_reaches_the_server_whole_and_the_reply_the_speaker(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig(reply_seconds=1.0)
    speech = chirp(1.5)
    recorder = loopback.record(SPEAKER_RATE)
    recorder.wait_started()
    speak_turn(loopback, daemon, speech)
    status = daemon.wait_until(turns_done(1), 20, "the turn to end")
    time.sleep(0.2)
    recording = recorder.stop()

    entries = server.log.entries()
    kinds = [e.kind for e in entries if e.direction == "in"]
    assert kinds[0] == "setup"
    assert kinds[1] == "activity_start", "activityStart must come before any audio"
    assert kinds.index("activity_end") > max(i for i, k in enumerate(kinds) if k == "audio")
    assert_received_whole(between(entries, "activity_start", "activity_end"), speech)

    reply_heard(recording, turn=1, seconds=1.0)
    assert status["leds"] == ["idle", "connecting", "listening", "thinking", "speaking", "idle"]
    turn = status["turns"][-1]
    assert turn["press_to_first_audio_ms"] is not None
    assert turn["release_to_activity_end_ms"] is not None


def test_press_while_setup_is_slow_loses_no_speech(loopback: PulseLoopback, make_rig: Any) -> None:
    server, daemon = make_rig(setup_delay=0.5, reply_seconds=0.4)
    speech = chirp(1.2)
    speak_turn(loopback, daemon, speech)
    status = daemon.wait_until(turns_done(1), 20, "the turn to end")
    entries = server.log.entries()
    setup_done = next(e.t for e in entries if e.kind == "setup_complete")
    first_audio = next(e.t for e in entries if e.kind == "audio" and e.direction == "in")
    assert first_audio >= setup_done
    assert_received_whole(between(entries, "activity_start", "activity_end"), speech)
    assert status["leds"][:3] == ["idle", "connecting", "listening"]


def test_press_during_a_reply_silences_the_speaker_and_the_next_turn_works(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig({"audio": {"earcons": False}}, reply_seconds=4.0)
    recorder = loopback.record(SPEAKER_RATE)
    recorder.wait_started()
    speak_turn(loopback, daemon, chirp(0.5))
    daemon.wait_until(lambda s: s["state"] == "speaking", 10, "the reply to start")
    time.sleep(0.5)
    barge = time.monotonic()
    daemon.ctl("press")
    time.sleep(0.8)
    loopback.play(chirp(0.5), MIC_RATE).wait()
    daemon.ctl("release")
    daemon.wait_until(turns_done(1), 20, "the second turn to end")
    time.sleep(0.2)
    recording = recorder.stop()

    samples, times = recorder.timeline()
    after = samples[(times > barge + 0.25) & (times < barge + 0.8)]
    assert after.size and np.abs(after).max() < pcm.db_to_amplitude(-50), "speaker not silent"
    before = pcm.from_float(samples[(times > barge - 0.4) & (times < barge - 0.05)])
    assert abs(pcm.dominant_frequency(before, SPEAKER_RATE) - tone_frequency(1)) < 30
    out_kinds = server.log.kinds(direction="out")
    assert "interrupted" in out_kinds
    # the second reply (turn 2's pitch) played after the barge-in
    late = pcm.from_float(samples[times > barge + 1.0])
    reply_heard(late, turn=2, seconds=4.0)
    assert len(recording) > 0


def test_toggle_mode_two_turns_hands_free_without_hearing_itself(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    # Echo: route what the speaker plays back into the microphone, as a box would.
    echo = loopback.pactl(
        "load-module",
        "module-loopback",
        "source=appliance_speaker.monitor",
        "sink=appliance_mic",
        "latency_msec=20",
    ).strip()
    try:
        server, daemon = make_rig(
            {"button": {"mode": "toggle"}, "conversation": {"silence_ms": 400}},
            reply_seconds=1.5,
        )
        daemon.ctl("press")
        daemon.wait_until(lambda s: s["state"] == "listening", 10, "listening")
        for turn in (1, 2):
            loopback.play(chirp(0.8), MIC_RATE).wait()
            server.wait_for(
                lambda t=turn: server.log.kinds(direction="out").count("turn_complete") >= t, 15
            )
            daemon.wait_until(lambda s: s["state"] == "listening", 10, "listening again")
        out_kinds = server.log.kinds(direction="out")
        assert "interrupted" not in out_kinds, "the device's own reply interrupted it"
        assert out_kinds.count("turn_complete") == 2
        assert "audio_stream_end" in server.log.kinds(direction="in")
        setup = server.log.entries()[0].raw or {}
        assert "setup" in setup
        daemon.ctl("press")
        status = daemon.wait_until(lambda s: not s["session_open"], 10, "the conversation to end")
        assert status["state"] == "idle"
    finally:
        loopback.pactl("unload-module", echo)


def test_follow_up_press_reuses_the_session_and_idle_timeout_closes_it(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig({"conversation": {"idle_timeout_s": 1.5}}, reply_seconds=0.3)
    for n in (1, 2):
        speak_turn(loopback, daemon, chirp(0.4))
        daemon.wait_until(turns_done(n), 20, f"turn {n}")
    assert {e.conn for e in server.log.entries()} == {1}
    status = daemon.wait_until(lambda s: not s["session_open"], 5, "the idle timeout")
    assert status["state"] == "idle"
    server.wait_for(lambda: server.log.connections()[0].closed is not None, 5)
    assert server.log.connections()[0].close_code == 1000


def test_sigterm_during_a_reply_exits_cleanly_and_promptly(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    _, daemon = make_rig(reply_seconds=5.0)
    speak_turn(loopback, daemon, chirp(0.4))
    daemon.wait_until(lambda s: s["state"] == "speaking", 10, "the reply to start")
    took = daemon.terminate(timeout=5)
    assert daemon.proc.returncode == 0
    assert took < 2.0, f"took {took:.2f} s to stop"
    log = daemon.log()
    assert "stopped" in log
    assert "left behind" not in log
    assert "Traceback" not in log
