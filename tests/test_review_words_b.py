"""The ended issues' words (9, 10, 14, 15, 16, 17), checked as a stranger reading them would.

Each test names the issue and the words it checks; each checks something the other
tests leave out (a second mode, a journal line, a bound the issue gives).
"""

from __future__ import annotations

from typing import Any

import pytest
from test_privacy_e2e import LIMIT_S, sent_after, settings, speak

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
