"""The ended issues' words (9, 10, 14, 15, 16, 17), checked as a stranger reading them would.

Each test names the issue and the words it checks; each checks something the other
tests leave out (a second mode, a journal line, a bound the issue gives).
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest
from speech import (
    MIC_RATE,
    SPEAKER_RATE,
    assert_received_whole,
    chirp,
    speak_turn,
    tone_frames,
    turns_done,
)
from test_camera_e2e import PERIOD_S, SLOW_LINK, frame_number, frames_taken, received, with_camera
from test_privacy_e2e import LIMIT_S, sent_after, settings, speak

from device.audio import pcm
from rig.daemon import Daemon
from rig.loopback import PulseLoopback


def camera_off_at(daemon: Daemon) -> float:
    """When the daemon said its camera went off (the last time)."""
    return [line.t for line in list(daemon.lines) if line.record.get("LIVE_CAMERA") == "off"][-1]


def assert_ears_and_eyes_closed(server: Any, daemon: Daemon, last_speech: float) -> None:
    """Issue 14, 1: "after the last speech the microphone stops streaming and the camera
    stops within `end_after_silence_s` + 1 s"."""
    daemon.wait_until(lambda s: not s["camera"], 15, "the camera off")
    entries = server.log.entries()
    late_audio = [t for t in sent_after(entries, "audio", last_speech) if t > LIMIT_S]
    late_frames = [t for t in sent_after(entries, "video", last_speech) if t > LIMIT_S]
    assert late_audio == [], f"microphone audio {late_audio[:3]} s after the last word"
    assert late_frames == [], f"camera frames {late_frames[:3]} s after the last word"
    off = camera_off_at(daemon) - last_speech
    assert off < LIMIT_S, f"the camera went off {off:.1f} s after the last word"


@pytest.mark.parametrize("mode", ["toggle", "push_to_talk"])
def test_issue_14_after_an_unanswered_interruption_the_camera_is_off_in_time(
    mode: str, loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig(settings(mode), reply_seconds=4.0)
    daemon.ctl("press")
    daemon.wait_until(lambda s: s["state"] == "listening", 10, "listening")
    speak(loopback)
    if mode == "push_to_talk":
        daemon.ctl("release")
    daemon.wait_until(lambda s: s["state"] == "speaking", 10, "the reply")
    server.call(setattr, server.server.config, "reply_seconds", 0.0)  # no answer to what comes
    if mode == "push_to_talk":
        daemon.ctl("press")
    last_speech = speak(loopback, 0.4)  # the person talks over the reply, then says nothing
    if mode == "push_to_talk":
        daemon.ctl("release")
    server.wait_for(lambda: "interrupted" in server.log.kinds(direction="out"), 10)
    assert_ears_and_eyes_closed(server, daemon, last_speech)


@pytest.mark.parametrize("mode", ["toggle", "push_to_talk"])
def test_issue_14_after_a_reply_lost_with_its_connection_the_camera_is_off_in_time(
    mode: str, loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig(settings(mode), reply_seconds=4.0)
    daemon.ctl("press")
    daemon.wait_until(lambda s: s["state"] == "listening", 10, "listening")
    last_speech = speak(loopback)
    if mode == "push_to_talk":
        daemon.ctl("release")
    daemon.wait_until(lambda s: s["state"] == "speaking", 10, "the reply")
    server.call(server.server.drop)  # the reply goes with the connection
    daemon.wait_until(lambda s: s["connections"] == 2, 15, "a new connection")
    assert_ears_and_eyes_closed(server, daemon, last_speech)


@pytest.mark.parametrize("mode", ["toggle", "push_to_talk"])
def test_issue_14_after_an_end_conversation_without_goodbye_the_camera_is_off_in_time(
    mode: str, loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig(
        settings(mode, tools={"enabled": ["end_conversation"]}), reply_seconds=0.0
    )
    server.call(server.server.queue_tool_call, "end_conversation")
    daemon.ctl("press")
    daemon.wait_until(lambda s: s["state"] == "listening", 10, "listening")
    last_speech = speak(loopback)
    if mode == "push_to_talk":
        daemon.ctl("release")
    server.wait_for(lambda: "tool_response" in server.log.kinds(direction="in"), 10)
    assert_ears_and_eyes_closed(server, daemon, last_speech)
    daemon.wait_until(lambda s: not s["session_open"], 5, "the hang-up")


def test_issue_14_a_service_dying_after_each_setup_is_given_up_on_in_one_journal_line(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """Issue 14, 2: "after `reconnect_for_s` the box gives up: error state, one journal line
    naming what happened, no retries until the next press" (hands-free here)."""
    server, daemon = make_rig(
        {
            "button": {"mode": "toggle"},
            "live": {"reconnect_for_s": 8, "connect_timeout_s": 2},
            "conversation": {"error_display_s": 1},
        },
        close_after_setup=(1011, "Internal error"),
    )
    pressed = time.monotonic()
    daemon.ctl("press")
    status = daemon.wait_until(lambda s: s["state"] == "error", 40, "giving up")
    opened = [c.opened - pressed for c in server.log.connections()]
    assert len([t for t in opened if t < 10]) <= 6, opened
    count = len(server.log.connections())
    time.sleep(3)
    assert len(server.log.connections()) == count, "no retries until the next press"
    gave_up = [r for r in daemon.records() if "gave up" in str(r.get("MESSAGE", ""))]
    assert len(gave_up) == 1, gave_up
    assert "1011" in gave_up[0]["MESSAGE"], "names what happened"
    assert "gave up" in status["status"]


def test_issue_14_push_to_talk_a_person_who_keeps_talking_is_never_cut_off(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """Issue 14, 1: "The silence counts from the last speech heard ..., so a person who
    keeps talking is never cut off", with the button held (the silence ends a held turn)."""
    server, daemon = make_rig(settings("push_to_talk"), reply_seconds=0.3)
    daemon.ctl("press")
    daemon.wait_until(lambda s: s["state"] == "listening", 10, "listening")
    talking_until = time.monotonic() + 2.5 * LIMIT_S
    while time.monotonic() < talking_until:  # short pauses, well inside the silence allowed
        speak(loopback, 0.5)
        time.sleep(0.3)
    status = daemon.status()
    assert status["state"] == "listening", "cut off while talking"
    assert "activity_end" not in server.log.kinds(direction="in"), "the turn ended early"
    released = time.monotonic()
    daemon.ctl("release")
    server.wait_for(lambda: "activity_end" in server.log.kinds(direction="in"), 10)
    (end,) = [e for e in server.log.entries(direction="in") if e.kind == "activity_end"]
    assert end.t > released, "the turn ended before the release"


def test_issue_14_a_button_held_in_silence_has_the_camera_off_in_time(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """Issue 14, 1, push-to-talk: the button held (stuck) after the last word; the camera,
    not only its frames, is off within `end_after_silence_s` + 1 s."""
    server, daemon = make_rig(settings("push_to_talk"), reply_seconds=0.3)
    daemon.ctl("press")  # and never released
    daemon.wait_until(lambda s: s["state"] == "listening" and s["camera"], 10, "listening")
    last_speech = speak(loopback)
    assert_ears_and_eyes_closed(server, daemon, last_speech)


def test_issue_14_hands_free_a_press_during_a_flood_silences_the_speaker_at_once(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """Issue 14, 3: "a press during such a flood silences the speaker as fast as during any
    reply": a ten-minute reply sent at once, hands-free, where the press hangs up."""
    _, daemon = make_rig(
        {"button": {"mode": "toggle"}, "audio": {"earcons": False}},
        pace=0,
        reply_seconds=600.0,
    )
    recorder = loopback.record(SPEAKER_RATE)
    recorder.wait_started()
    daemon.ctl("press")
    daemon.wait_until(lambda s: s["state"] == "listening", 10, "listening")
    speak(loopback)
    daemon.wait_until(lambda s: s["state"] == "speaking", 20, "the long reply to start")
    time.sleep(3.0)
    pressed = time.monotonic()
    daemon.ctl("press")  # hands-free, the press hangs up
    daemon.wait_until(lambda s: not s["session_open"], 10, "the hang-up")
    time.sleep(1.0)
    recorder.stop()
    samples, times = recorder.timeline()
    played = pcm.from_float(samples[(times > pressed - 2.5) & (times < pressed)])
    assert len(tone_frames(played, turn=1)) * 0.02 > 2.0, "the long reply did not play"
    after = samples[(times > pressed + 0.25) & (times < pressed + 1.0)]
    assert after.size and abs(after).max() < pcm.db_to_amplitude(-50), "speaker not silent"


def video_times(server: Any) -> list[float]:
    return [e.t for e in server.log.entries(direction="in") if e.kind == "video"]


def test_issue_9_a_lower_rate_paces_the_frames_evenly_from_the_press(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """Issue 9: "at most one frame per second (configurable lower), evenly paced", the
    first "at the press itself"."""
    server, daemon = make_rig(
        {"camera": {"enabled": True, "source": "synthetic", "fps": 0.5}}, reply_seconds=0.3
    )
    pressed = speak_turn(loopback, daemon, chirp(5.0))
    daemon.wait_until(turns_done(1), 20, "the turn to end")
    arrived = [t - pressed for t in video_times(server)]
    assert len(arrived) == 3, f"frames at {arrived} s in a 5 s turn at 0.5 fps"
    assert arrived[0] < 0.5, "the first frame comes with the press"
    spacing = [b - a for a, b in itertools.pairwise(arrived)]
    assert all(s == pytest.approx(2.0, abs=0.3) for s in spacing), spacing


@pytest.mark.parametrize("linger_s", [3.0, 0.5], ids=["camera-lingering", "camera-off"])
def test_issue_9_a_follow_up_press_has_its_first_frame_at_the_press(
    linger_s: float, loopback: PulseLoopback, make_rig: Any
) -> None:
    """Issue 9: "in push-to-talk from the press to the release, the first frame taken at
    the press itself", for a follow-up press in the session still open too."""
    server, daemon = make_rig(
        {"camera": {"enabled": True, "source": "synthetic", "linger_s": linger_s}},
        reply_seconds=0.3,
    )
    speak_turn(loopback, daemon, chirp(1.5))
    daemon.wait_until(turns_done(1), 20, "the first turn to end")
    time.sleep(1.5)
    assert daemon.status()["camera"] == (linger_s > 1.5)
    first_turn = len(video_times(server))
    pressed = speak_turn(loopback, daemon, chirp(2.5))
    daemon.wait_until(turns_done(2), 20, "the second turn to end")
    arrived = [t - pressed for t in video_times(server)[first_turn:]]
    assert arrived and arrived[0] < 0.5, f"the second turn's frames came at {arrived} s"
    assert len(arrived) in (2, 3), arrived

def test_issue_9_hands_free_on_a_slow_link_frames_are_dropped_and_speech_goes_whole(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """Issue 9: "If the network is slow, the newest frame wins: frames are dropped, never
    queued, and audio always goes first", in toggle mode (the slow-link test so far is a
    push-to-talk turn)."""
    server, daemon = make_rig(
        {
            **with_camera(linger_s=0.5),
            "button": {"mode": "toggle"},
            "conversation": {"silence_ms": 400},
            # Gated, not cancelled: what reaches the server is the microphone, unprocessed.
            "audio": {"chunk_ms": 20, "mic_during_playback": "gate"},
        },
        reply_seconds=0.3,
        uplink_bytes_per_s=SLOW_LINK,
    )
    pressed = time.monotonic()
    daemon.ctl("press")
    daemon.wait_until(lambda s: s["state"] == "listening", 10, "listening")
    speech = chirp(4.0)
    loopback.play(speech, MIC_RATE).wait()
    server.wait_for(lambda: "turn_complete" in server.log.kinds(direction="out"), 30)
    daemon.ctl("press")  # hang up
    daemon.wait_until(lambda s: not s["session_open"] and not s["camera"], 15, "the end")
    assert_received_whole(server.log.audio_in(), speech, loopback.heard(pressed))
    frames = received(server.log.entries(), "video")
    numbers = [frame_number(f) for f in frames]
    assert numbers == sorted(set(numbers)), "frames in the order they were taken, none twice"
    assert 0 < len(frames) < frames_taken(daemon), "every frame went over a link with no room"
    on_link_s = max(len(f.data or b"") for f in frames) * 4 / 3 / SLOW_LINK
    for n, frame in zip(numbers, frames, strict=True):
        late = frame.t - on_link_s - (pressed + n * PERIOD_S)  # frame n + 1 was taken by then
        assert late < PERIOD_S, f"frame {n} arrived {late:.2f} s after a newer one was taken"


def test_issue_16_sigterm_with_the_camera_streaming_stops_cleanly_within_two_seconds(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """Issue 16, 3: "SIGTERM stops it cleanly within two seconds", here in a hands-free
    conversation with the microphone and the camera on; issue 9: the journal says the
    camera stopped."""
    server, daemon = make_rig(
        {"button": {"mode": "toggle"}, "camera": {"enabled": True, "source": "synthetic"}},
        reply_seconds=0.3,
    )
    daemon.ctl("press")
    daemon.wait_until(lambda s: s["state"] == "listening" and s["camera"], 10, "the camera")
    server.wait_for(lambda: len(video_times(server)) >= 2, 10)
    took = daemon.terminate(timeout=5)
    assert daemon.proc.returncode == 0
    assert took < 2.0, f"took {took:.2f} s to stop"
    assert len(daemon.records(LIVE_CAMERA="off")) == 1, "the camera's switch-off not said"
    assert "Traceback" not in daemon.log()
