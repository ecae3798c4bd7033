"""Privacy end to end: after the last word, the microphone and the camera stop by themselves.

The real daemon on the loopback, against the local server. Each test ends with
nobody talking and checks what left the box: no microphone audio and no camera
frame reached the server later than `end_after_silence_s` + 1 s after the last
speech, and the daemon says its camera is off, in both modes, including the
situations that used to leave a box listening for ever.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from speech import (
    MIC_RATE,
    chirp,
)

from device.control_client import request
from rig.daemon import Daemon
from rig.loopback import PulseLoopback
from rig.server.log import Entry

SILENCE_S = 2.0
#: The issue's bound: the silence allowed, and one second more.
LIMIT_S = SILENCE_S + 1.0


def settings(mode: str, **more: dict[str, Any]) -> dict[str, dict[str, Any]]:
    chosen: dict[str, dict[str, Any]] = {
        "button": {"mode": mode},
        "conversation": {"end_after_silence_s": SILENCE_S, "silence_ms": 300},
        "camera": {"enabled": True, "source": "synthetic"},
        "audio": {"mic_during_playback": "open"},  # hands-free speech can interrupt
    }
    for name, table in more.items():
        chosen.setdefault(name, {}).update(table)
    return chosen


def speak(loopback: PulseLoopback, seconds: float = 0.6) -> float:
    """Say something into the microphone; returns when the last of it was played."""
    loopback.play(chirp(seconds), MIC_RATE).wait()
    return time.monotonic()


def say_a_turn(loopback: PulseLoopback, daemon: Daemon, mode: str) -> float:
    """Press, say something once listening, and release if the button is held: the
    opening of a conversation; returns when the words were said."""
    daemon.ctl("press")
    daemon.wait_until(lambda s: s["state"] == "listening", 10, "listening")
    said = speak(loopback)
    if mode == "push_to_talk":
        daemon.ctl("release")
    return said


def sent_after(entries: list[Entry], kind: str, t: float) -> list[float]:
    return [e.t - t for e in entries if e.direction == "in" and e.kind == kind and e.t > t]


def assert_nothing_sent_late(server: Any, last_speech: float) -> None:
    """No microphone audio and no camera frame reached the server later than the
    silence allowed and one second after the last word."""
    entries = server.log.entries()
    late_audio = [t for t in sent_after(entries, "audio", last_speech) if t > LIMIT_S]
    late_frames = [t for t in sent_after(entries, "video", last_speech) if t > LIMIT_S]
    assert late_audio == [], f"microphone audio {late_audio[:3]} s after the last word"
    assert late_frames == [], f"camera frames {late_frames[:3]} s after the last word"


def assert_stopped_by_itself(server: Any, daemon: Daemon, last_speech: float) -> None:
    """Nobody talks from `last_speech` on: the box must close its ears and eyes in time."""
    status = daemon.wait_until(lambda s: not s["camera"] and s["state"] == "idle", 15, "quiet")
    assert_nothing_sent_late(server, last_speech)
    quiet = status["states"][-1]["t"] - last_speech
    assert quiet < LIMIT_S + 1.0, f"back to idle {quiet:.1f} s after the last word"
    time.sleep(LIMIT_S)
    assert sent_after(server.log.entries(), "audio", time.monotonic() - LIMIT_S) == []


def test_hands_free_an_unanswered_interruption_still_ends_the_conversation(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig(settings("toggle"), reply_seconds=4.0)
    say_a_turn(loopback, daemon, "toggle")
    daemon.wait_until(lambda s: s["state"] == "speaking", 10, "the reply")
    server.call(setattr, server.server.config, "reply_seconds", 0.0)  # no answer to what comes
    last_speech = speak(loopback, 0.4)  # the person talks over the reply, then says nothing
    server.wait_for(lambda: "interrupted" in server.log.kinds(direction="out"), 10)
    assert_stopped_by_itself(server, daemon, last_speech)


def test_hands_free_a_reply_lost_with_its_connection_still_ends_the_conversation(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig(settings("toggle"), reply_seconds=4.0)
    last_speech = say_a_turn(loopback, daemon, "toggle")
    daemon.wait_until(lambda s: s["state"] == "speaking", 10, "the reply")
    server.call(server.server.drop)  # the reply goes with the connection
    daemon.wait_until(lambda s: s["connections"] == 2, 15, "a new connection")
    assert_stopped_by_itself(server, daemon, last_speech)


def test_hands_free_an_end_conversation_call_with_no_goodbye_hangs_up(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig(
        settings("toggle", tools={"enabled": ["end_conversation"]}), reply_seconds=0.0
    )
    server.call(server.server.queue_tool_call, "end_conversation")
    last_speech = say_a_turn(loopback, daemon, "toggle")
    server.wait_for(lambda: "tool_response" in server.log.kinds(direction="in"), 10)
    assert_stopped_by_itself(server, daemon, last_speech)
    assert not daemon.status()["session_open"]


def test_hands_free_a_person_who_keeps_talking_is_never_cut_off(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig(settings("toggle"), reply_seconds=0.0)
    daemon.ctl("press")
    daemon.wait_until(lambda s: s["state"] == "listening", 10, "listening")
    talking_until = time.monotonic() + 2.5 * SILENCE_S
    while time.monotonic() < talking_until:  # short pauses, well inside the silence allowed
        speak(loopback, 0.5)
        time.sleep(0.3)
    assert daemon.status()["session_open"], "cut off while talking"
    assert_stopped_by_itself(server, daemon, time.monotonic())


def test_push_to_talk_a_button_held_with_nobody_talking_stops_the_microphone(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig(settings("push_to_talk"), reply_seconds=0.3)
    daemon.ctl("press")  # and never released
    daemon.wait_until(lambda s: s["state"] == "listening", 10, "listening")
    last_speech = speak(loopback)
    daemon.wait_until(lambda s: s["state"] == "thinking" or s["state"] == "speaking", 15, "end")
    assert_stopped_by_itself(server, daemon, last_speech)
    assert "activity_end" in server.log.kinds(direction="in"), "the turn went to the service"


def test_hands_free_a_hooks_words_to_an_empty_room_send_no_camera_frame(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """`ctl text` opens a conversation so that someone may answer; nobody does. The camera
    sent a frame a second until the silence ended it."""
    server, daemon = make_rig(settings("toggle"), reply_seconds=0.5)
    asked = time.monotonic()
    assert request(daemon.socket, "text", text="The washing machine is done.")["ok"]
    daemon.wait_until(lambda s: s["leds"].count("speaking") == 1, 10, "the announcement")
    assert_stopped_by_itself(server, daemon, asked)
    assert sent_after(server.log.entries(), "video", asked) == [], "frames to an empty room"


def test_a_stuck_button_in_a_room_that_is_never_quiet_stops_after_its_longest_turn(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """A TV or a fan keeps the microphone above `speech_dbfs`, so the silence timer never
    ran out: the microphone and the camera streamed for as long as the sound lasted."""
    longest = 10.0
    server, daemon = make_rig(
        settings("push_to_talk", conversation={"longest_turn_s": longest}), reply_seconds=0.3
    )
    daemon.ctl("press")  # and never released
    pressed = time.monotonic()
    daemon.wait_until(lambda s: s["state"] == "listening", 10, "listening")
    room = loopback.play(chirp(longest + 6.0), MIC_RATE)  # never silent for a second
    daemon.wait_until(lambda s: s["state"] in ("thinking", "speaking"), longest + 5, "the end")
    room.wait()
    entries = server.log.entries()
    assert max(sent_after(entries, "audio", pressed)) < longest + 1.0
    assert max(sent_after(entries, "video", pressed)) < longest + 1.0
    assert "activity_end" in server.log.kinds(direction="in"), "ended as a release does"


def camera_off_at(daemon: Daemon) -> float:
    """No sooner than the daemon's camera went off (its last run), once the journal said
    so: when `status` first said it was off, or when its journal line was read, whichever
    came first. The line comes through the log's pipe, which may lag the status (in CI,
    under load, it had not arrived when the status said off)."""
    daemon.wait_until(lambda s: not s["camera"], 15, "the camera off")
    seen = time.monotonic()
    daemon.wait_for_records(len(daemon.records(LIVE_CAMERA="on")), LIVE_CAMERA="off")
    said = [line.t for line in list(daemon.lines) if line.record.get("LIVE_CAMERA") == "off"]
    return min(seen, said[-1])


def assert_ears_and_eyes_closed(server: Any, daemon: Daemon, last_speech: float) -> None:
    """Issue 14, 1: "after the last speech the microphone stops streaming and the camera
    stops within `end_after_silence_s` + 1 s"."""
    off_at = camera_off_at(daemon)
    assert_nothing_sent_late(server, last_speech)
    off = off_at - last_speech
    assert off < LIMIT_S, f"the camera went off {off:.1f} s after the last word"


@pytest.mark.parametrize("mode", ["toggle", "push_to_talk"])
def test_after_an_unanswered_interruption_the_camera_is_off_in_time(
    mode: str, loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig(settings(mode), reply_seconds=4.0)
    say_a_turn(loopback, daemon, mode)
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
def test_after_a_reply_lost_with_its_connection_the_camera_is_off_in_time(
    mode: str, loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig(settings(mode), reply_seconds=4.0)
    last_speech = say_a_turn(loopback, daemon, mode)
    daemon.wait_until(lambda s: s["state"] == "speaking", 10, "the reply")
    server.call(server.server.drop)  # the reply goes with the connection
    daemon.wait_until(lambda s: s["connections"] == 2, 15, "a new connection")
    assert_ears_and_eyes_closed(server, daemon, last_speech)


@pytest.mark.parametrize("mode", ["toggle", "push_to_talk"])
def test_after_an_end_conversation_without_goodbye_the_camera_is_off_in_time(
    mode: str, loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig(
        settings(mode, tools={"enabled": ["end_conversation"]}), reply_seconds=0.0
    )
    server.call(server.server.queue_tool_call, "end_conversation")
    last_speech = say_a_turn(loopback, daemon, mode)
    server.wait_for(lambda: "tool_response" in server.log.kinds(direction="in"), 10)
    assert_ears_and_eyes_closed(server, daemon, last_speech)
    daemon.wait_until(lambda s: not s["session_open"], 5, "the hang-up")


def test_push_to_talk_a_person_who_keeps_talking_is_never_cut_off(
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


def test_a_button_held_in_silence_has_the_camera_off_in_time(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """Issue 14, 1, push-to-talk: the button held (stuck) after the last word; the camera,
    not only its frames, is off within `end_after_silence_s` + 1 s."""
    server, daemon = make_rig(settings("push_to_talk"), reply_seconds=0.3)
    daemon.ctl("press")  # and never released
    daemon.wait_until(lambda s: s["state"] == "listening" and s["camera"], 10, "listening")
    last_speech = speak(loopback)
    assert_ears_and_eyes_closed(server, daemon, last_speech)
