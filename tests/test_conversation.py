"""The conversation end to end: the real daemon, the real SDK, the local server, loopback audio.

Each test drives the daemon as a person would (press, speak into the microphone,
release) through its control socket and checks what a person would notice:
the audio that reached the server, the sound at the speaker, the LED states.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from speech import (
    MIC_RATE,
    SPEAKER_RATE,
    assert_received_whole,
    chirp,
    reply_heard,
    speak_turn,
    speaker_during_turn,
    talk_over,
    turns_done,
)

from device.audio import pcm
from rig.acoustic import AcousticPath, Room
from rig.loopback import PulseLoopback
from rig.server.voice import tone_frequency
from rig.speech import said


def test_push_to_talk_turn_reaches_the_server_whole_and_the_reply_the_speaker(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig(reply_seconds=1.0)
    speech = chirp(1.5)
    recorder = loopback.record(SPEAKER_RATE)
    recorder.wait_started()
    pressed = speak_turn(loopback, daemon, speech)
    status = daemon.wait_until(turns_done(1), 20, "the turn to end")
    time.sleep(0.2)
    recording = recorder.stop()

    entries = server.log.entries()
    kinds = [e.kind for e in entries if e.direction == "in"]
    assert kinds[0] == "setup"
    assert kinds[1] == "activity_start", "activityStart must come before any audio"
    assert kinds.index("activity_end") > max(i for i, k in enumerate(kinds) if k == "audio")
    assert_received_whole(server.log.activity_audio(), speech, loopback.heard(pressed))

    reply_heard(recording, turn=1, seconds=1.0)
    assert status["leds"] == ["idle", "connecting", "listening", "thinking", "speaking", "idle"]
    turn = status["turns"][-1]
    assert turn["press_to_first_audio_ms"] is not None
    assert turn["release_to_activity_end_ms"] is not None


def test_a_reply_at_16_khz_in_odd_parts_beside_text_and_images_plays_at_its_pitch(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    _, daemon = make_rig(
        {"audio": {"earcons": False}},
        reply_seconds=1.0,
        reply_rate=16000,
        odd_parts=True,
        other_parts=True,
    )
    reply_heard(speaker_during_turn(loopback, daemon), turn=1, seconds=1.0)


def test_the_last_word_reaches_the_server_when_the_button_comes_up_with_it(
    loopback: PulseLoopback, make_rig: Any, loopback_latency: float
) -> None:
    """The release comes as the last sound reaches the sound card: it is still in the
    capture period being filled, and must not be cut off."""
    server, daemon = make_rig(reply_seconds=0.3)
    for turn in (1, 2, 3):
        pressed = speak_turn(loopback, daemon, chirp(0.6), pause_s=loopback_latency)
        daemon.wait_until(turns_done(turn), 20, f"turn {turn} to end")
        assert_received_whole(
            server.log.activity_audio(after=pressed), chirp(0.6), loopback.heard(pressed)
        )


def test_press_while_setup_is_slow_loses_no_speech(loopback: PulseLoopback, make_rig: Any) -> None:
    server, daemon = make_rig(setup_delay=0.5, reply_seconds=0.4)
    speech = chirp(1.2)
    pressed = speak_turn(loopback, daemon, speech)
    status = daemon.wait_until(turns_done(1), 20, "the turn to end")
    entries = server.log.entries()
    setup_done = next(e.t for e in entries if e.kind == "setup_complete")
    first_audio = next(e.t for e in entries if e.kind == "audio" and e.direction == "in")
    assert first_audio >= setup_done
    assert_received_whole(server.log.activity_audio(), speech, loopback.heard(pressed))
    assert status["leds"][:3] == ["idle", "connecting", "listening"]


#: On the daemon's path: google.genai's module takes 5 s longer to run, and a file says
#: when those seconds are over (as on a Pi Zero, where the SDK alone takes several). The
#: wait is in the loader, under that module's own lock: a finder runs under the global
#: import lock, which would hold every other thread's imports too.
SLOW_SDK = """
import importlib.abc, importlib.util, pathlib, sys, time


class SlowLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        time.sleep(5)
        pathlib.Path(__file__).with_name("sdk-loaded").touch()
        self.loader.exec_module(module)


class SlowSdk(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "google.genai":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        spec.loader = SlowLoader(spec.loader)
        return spec


sys.meta_path.insert(0, SlowSdk())
"""


def test_ready_does_not_wait_for_the_sdk_and_a_press_meanwhile_loses_no_speech(
    loopback: PulseLoopback, make_rig: Any, tmp_path: Path
) -> None:
    """The box answers and takes a press while the Live SDK still loads; the speech of
    that press reaches the server whole once the client exists."""
    (tmp_path / "sitecustomize.py").write_text(SLOW_SDK)
    server, daemon = make_rig(
        env={"PYTHONPATH": str(tmp_path)}, client_built=False, reply_seconds=0.4
    )
    assert not (tmp_path / "sdk-loaded").exists(), "READY waited for the SDK's import"
    speech = chirp(1.2)
    pressed = speak_turn(loopback, daemon, speech)
    assert not (tmp_path / "sdk-loaded").exists(), "the press came after the SDK's import"
    status = daemon.wait_until(turns_done(1), 20, "the turn to end")
    assert_received_whole(server.log.activity_audio(), speech, loopback.heard(pressed))
    # Released while the SDK still loaded: connecting until then, never listening.
    assert status["leds"][:4] == ["idle", "connecting", "thinking", "speaking"]


def test_press_during_a_reply_silences_the_speaker_and_the_next_turn_works(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig({"audio": {"earcons": False}}, reply_seconds=4.0)
    recorder = loopback.record(SPEAKER_RATE)
    recorder.wait_started()
    speak_turn(loopback, daemon, chirp(0.5))
    daemon.wait_until(lambda s: s["state"] == "speaking", 10, "the reply to start")
    time.sleep(0.5)
    barge = talk_over(loopback, daemon, turn=1)
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



@pytest.mark.parametrize("taps, uplink", [(1, None), (2, 24_000)])
def test_more_turns_while_the_box_thinks_the_last_is_answered_and_it_never_shows_idle_between(
    loopback: PulseLoopback, make_rig: Any, taps: int, uplink: float | None
) -> None:
    """Press, speak, release; press and release again (once, or twice in a row behind a
    slow uplink: both are sent before the service has heard the first) before any reply:
    the service ends the earlier turns (interrupted) and answers the last, which the box
    plays. A tap pressed while the one before it still waits for the link is one turn
    with it to the service (the outbox joins them): how many the service hears depends on
    the link's pace, and each one it heard but the last was interrupted."""
    server, daemon = make_rig({"audio": {"earcons": False}}, think_seconds=1.5,
                              reply_seconds=1.0, uplink_bytes_per_s=uplink)  # fmt: skip
    recorder = loopback.record(SPEAKER_RATE)
    recorder.wait_started()
    speak_turn(loopback, daemon, chirp(0.4))
    daemon.wait_until(lambda s: s["state"] == "thinking", 10, "thinking")
    time.sleep(0.3)
    for _ in range(taps):  # short turns, the earlier ones unanswered
        daemon.ctl("press")
        daemon.ctl("release")
    status = daemon.wait_until(turns_done(1 + taps), 20, "the last turn's reply")
    recorder.stop()

    heard = server.log.kinds(direction="in").count("activity_end")
    assert heard == 1 + taps if uplink is None else 1 <= heard <= 1 + taps
    assert server.log.kinds(direction="out").count("interrupted") == heard - 1
    states = [entry["state"] for entry in status["states"]]
    first = states.index("thinking")
    assert "idle" not in states[first:-1], states
    assert states[-3:] == ["thinking", "speaking", "idle"], states
    samples, _ = recorder.timeline()
    reply_heard(pcm.from_float(samples), turn=heard, seconds=1.0)  # the last turn it heard


def test_toggle_mode_two_turns_hands_free_without_hearing_itself(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    # Echo: what the speaker plays comes back into the microphone, as in a box. The
    # replies are spoken, as a box's are: with a pure tone the echo canceller let the
    # first reply through 1.28 s into it in 2 runs of 22.
    voice = pcm.from_float(said("It will be sunny tomorrow, and warm.", -22.0, SPEAKER_RATE))
    with AcousticPath(loopback, Room(delay_ms=20, gain_db=-6.0)):
        server, daemon = make_rig(
            {"button": {"mode": "toggle"}, "conversation": {"silence_ms": 400}},
            reply_seconds=1.5,
            voice=voice,
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


def test_hands_free_silence_is_not_sent_and_speech_after_it_arrives_whole(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """Nobody talking: after a second the box stops sending (and says the stream paused);
    the next words reach the server from their first sound, the turn answered as usual."""
    server, daemon = make_rig(
        {"button": {"mode": "toggle"}, "conversation": {"silence_ms": 400}}, reply_seconds=0.3
    )
    daemon.ctl("press")
    daemon.wait_until(lambda s: s["state"] == "listening", 10, "listening")
    server.wait_for(lambda: "audio_stream_end" in server.log.kinds(direction="in"), 10)
    paused = time.monotonic()
    time.sleep(1.0)
    def audio_since_pause() -> list[bytes]:
        entries = server.log.entries(direction="in")
        return [e.data or b"" for e in entries if e.kind == "audio" and e.t > paused]

    assert audio_since_pause() == [], "silence is not streamed"
    speech = chirp(0.8)
    spoke = time.monotonic()
    loopback.play(speech, MIC_RATE).wait()
    server.wait_for(lambda: "turn_complete" in server.log.kinds(direction="out"), 15)
    assert_received_whole(b"".join(audio_since_pause()), speech, loopback.heard(spoke - 0.3))


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


def test_a_reply_sent_faster_than_it_plays_is_heard_whole_whatever_the_reply_timer(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """The reply timer ends a reply that stops coming, never one that came whole and is
    still playing (found by the soak: a 4 s reply sent at once cut after 2 s)."""
    settings = {"audio": {"earcons": False}, "conversation": {"reply_timeout_s": 2}}
    _, daemon = make_rig(settings, pace=0, reply_seconds=4.0)
    recorder = loopback.record(SPEAKER_RATE)
    recorder.wait_started()
    speak_turn(loopback, daemon, chirp(0.5))
    daemon.wait_until(turns_done(1), 30, "the turn to end")
    time.sleep(0.3)
    reply_heard(recorder.stop(), turn=1, seconds=4.0)


def test_a_model_that_works_on_after_its_first_words_is_heard_to_its_last(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """turnComplete with interactionStatus IN_PROGRESS is not the end: the box thinks on
    (the LEDs say so) and plays the rest when it comes; the turn ends at IDLE."""
    _, daemon = make_rig({"audio": {"earcons": False}}, reply_seconds=2.0, more_after_s=2.0)
    recorder = loopback.record(SPEAKER_RATE)
    recorder.wait_started()
    speak_turn(loopback, daemon, chirp(0.5))
    status = daemon.wait_until(turns_done(1), 20, "the turn to end")
    time.sleep(0.2)
    reply_heard(recorder.stop(), turn=1, seconds=2.0)
    assert status["leds"] == [
        "idle", "connecting", "listening", "thinking", "speaking", "thinking", "speaking", "idle"
    ]
    assert daemon.log().count("model said:") == 1, "one journal line for the whole reply"
