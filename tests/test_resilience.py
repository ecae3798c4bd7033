"""Faults on the wire and in the box: the real daemon keeps talking, or says clearly why not.

Every test runs the daemon as the service does, against the local server's fault
injection and the loopback audio, and ends by checking what an owner would
check: the device is back in idle (or the conversation goes on), the journal
has no traceback, no task was left behind, and no socket leaked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import string
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from google.genai import types
from helpers import closed_port, until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from speech import (
    MIC_RATE,
    SPEAKER_RATE,
    assert_clean,
    assert_received_whole,
    chirp,
    reply_heard,
    speak_turn,
    turns_done,
)
from test_live_session import first_outcome, link_to
from test_pacing import given_up_unhammered
from wire import config_for

from device.audio import pcm
from device.states import ConnectFailed
from rig.daemon import Daemon
from rig.loopback import PulseLoopback
from rig.server.server import LiveServer, ServerThread

# Short bounds so that faults are noticed in test time; the defaults are for the field.
RESILIENT = {
    "live": {"keepalive_s": 1, "dead_after_s": 4, "reconnect_for_s": 15, "connect_timeout_s": 2},
    "conversation": {"error_display_s": 1},
}


def merged(*extra: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {k: dict(v) for k, v in RESILIENT.items()}
    for more in extra:
        for section, values in more.items():
            out.setdefault(section, {}).update(values)
    return out


def one_turn(loopback: PulseLoopback, daemon: Daemon, n: int, seconds: float = 0.4) -> float:
    pressed = speak_turn(loopback, daemon, chirp(seconds))
    daemon.wait_until(turns_done(n), 20, f"turn {n} to end")
    return pressed


def ask_until_the_reply_begins(loopback: PulseLoopback, daemon: Daemon) -> None:
    """A short question, and the box speaking its answer: the moment to cut a reply off."""
    speak_turn(loopback, daemon, chirp(0.3))
    daemon.wait_until(lambda s: s["state"] == "speaking", 10, "the reply")


def handle_in_setup(entry_setup: dict[str, Any] | None) -> str | None:
    resumption = (entry_setup or {}).get("sessionResumption") or {}
    return resumption.get("handle")


# ---- goAway --------------------------------------------------------------------------------


def test_go_away_mid_speech_switches_at_once_and_no_audio_is_lost_or_repeated(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig(RESILIENT, reply_seconds=0.3)
    one_turn(loopback, daemon, 1)  # so that there is a handle to resume with
    speech = chirp(2.0)
    pressed = time.monotonic()
    daemon.ctl("press")
    player = loopback.play(speech, MIC_RATE)
    time.sleep(0.8)
    server.call(server.server.send_go_away, "0.5s")  # too little time to wait for quiet
    player.wait()
    time.sleep(0.15)
    daemon.ctl("release")
    status = daemon.wait_until(turns_done(2), 20, "the turn across the switch to end")

    _, second = server.log.connections()
    assert handle_in_setup(second.setup), "the new connection resumed the session"
    assert_received_whole(
        server.log.activity_audio(after=pressed), speech, loopback.heard(pressed)
    )
    assert server.log.kinds(conn=second.id, direction="in")[:2] == ["setup", "activity_start"]
    assert "error" not in status["leds"]
    assert_clean(daemon, server)


def test_go_away_with_time_to_spare_waits_for_the_turn_and_resumes_with_the_newest_handle(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig(RESILIENT, reply_seconds=0.3)
    one_turn(loopback, daemon, 1)
    speech = chirp(1.5)
    daemon.ctl("press")
    player = loopback.play(speech, MIC_RATE)
    time.sleep(0.5)
    server.call(server.server.send_go_away, "20s")
    player.wait()
    time.sleep(0.15)
    daemon.ctl("release")
    daemon.wait_until(turns_done(2), 20, "the turn")
    server.wait_for(lambda: len(server.log.connections()) == 2, 10)

    first, second = server.log.connections()
    first_in = server.log.entries(conn=first.id)
    turn_done = max(e.t for e in first_in if e.kind == "turn_complete")
    assert second.opened > turn_done, "the switch waited for the reply"
    assert "activity_end" in [e.kind for e in first_in if e.direction == "in"]
    newest = [
        (e.raw or {})["sessionResumptionUpdate"].get("newHandle")
        for e in first_in
        if e.kind == "resumption_update"
    ]
    assert handle_in_setup(second.setup) == [h for h in newest if h][-1]
    server.wait_for(lambda: first.closed is not None, 5)
    assert first.close_code == 1000, "the old connection was closed normally, by the device"
    one_turn(loopback, daemon, 3)
    assert len(server.log.connections()) == 2
    assert_clean(daemon, server)


def test_go_away_mid_reply_lets_the_reply_finish_then_the_session_continues(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig(merged({"audio": {"earcons": False}}), reply_seconds=2.0)
    one_turn(loopback, daemon, 1, seconds=0.3)  # 2 s reply: turn 1
    recorder = loopback.record(SPEAKER_RATE)
    recorder.wait_started()
    ask_until_the_reply_begins(loopback, daemon)
    server.call(server.server.send_go_away, "20s")
    daemon.wait_until(turns_done(2), 20, "the reply to finish")
    time.sleep(0.3)
    reply_heard(recorder.stop(), turn=2, seconds=2.0)
    server.wait_for(lambda: len(server.log.connections()) == 2, 10)
    recorder = loopback.record(SPEAKER_RATE)
    recorder.wait_started()
    one_turn(loopback, daemon, 3, seconds=0.3)
    time.sleep(0.3)
    reply_heard(recorder.stop(), turn=3, seconds=2.0)  # turn 3 of the same session
    assert_clean(daemon, server)


def test_a_reply_sent_whole_plays_to_its_end_across_a_go_away_that_cannot_wait_for_it(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """The service sends a reply far faster than it plays, then its goAway: the box cannot
    wait for the speaker to finish before the connection ends, and what had come was
    dropped with the connection. It plays on across the switch, to its last sample."""
    server, daemon = make_rig(merged({"audio": {"earcons": False}}), reply_seconds=0.3)
    one_turn(loopback, daemon, 1, seconds=0.3)  # a handle to resume with
    assert server.server is not None
    server.server.config.pace, server.server.config.reply_seconds = 0, 20.0
    recorder = loopback.record(SPEAKER_RATE)
    recorder.wait_started()
    ask_until_the_reply_begins(loopback, daemon)
    server.call(server.server.send_go_away, "4s")  # 1 s to wait for quiet, 19 s to play
    daemon.wait_until(turns_done(2), 40, "the reply to finish")
    time.sleep(0.3)
    reply_heard(recorder.stop(), turn=2, seconds=20.0)
    assert len(server.log.connections()) == 2
    server.server.config.reply_seconds = 0.3
    one_turn(loopback, daemon, 3, seconds=0.3)  # the session goes on
    assert len(server.log.connections()) == 2
    assert_clean(daemon, server)


def test_a_go_away_with_no_time_to_wait_mid_reply_ends_the_turn_cleanly(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig(RESILIENT, reply_seconds=2.0)
    one_turn(loopback, daemon, 1, seconds=0.3)
    ask_until_the_reply_begins(loopback, daemon)
    server.call(server.server.send_go_away, "1s")  # less than the switch margin: at once
    status = daemon.wait_until(
        lambda s: s["state"] == "idle" and s["connected"] and s["connections"] == 2,
        10,
        "idle on the new connection, not stuck in speaking",
    )
    assert status["leds"][-2:] == ["speaking", "idle"]
    one_turn(loopback, daemon, 3, seconds=0.3)
    assert_clean(daemon, server)


# ---- connections that end badly --------------------------------------------------------------


def test_close_1011_while_thinking_ends_the_turn_cleanly_and_the_next_press_works(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig(RESILIENT, reply_seconds=0.3, think_seconds=3.0)
    one_turn(loopback, daemon, 1)
    speak_turn(loopback, daemon, chirp(0.4))
    daemon.wait_until(lambda s: s["state"] == "thinking", 10, "thinking")
    # The turn's end reached the service (one still in the box's outbox is answered on the
    # next connection, test_states): the reply it awaits goes with the connection.
    server.wait_for(lambda: server.log.kinds(direction="in").count("activity_end") >= 2, 5)
    server.call(server.server.close_all, 1011, "Internal error")
    status = daemon.wait_until(lambda s: s["state"] == "idle" and s["connected"], 15, "back")
    assert status["session_open"], "the session lives on over a new connection"
    assert status["leds"][-2:] == ["thinking", "idle"], "never left hanging in thinking"
    server.call(setattr, server.server.config, "think_seconds", 0.0)
    one_turn(loopback, daemon, 3)
    assert len(server.log.connections()) == 2
    assert_clean(daemon, server)


def test_close_1011_mid_reply_plays_what_arrived_and_resumes(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig(RESILIENT, reply_seconds=3.0)
    one_turn(loopback, daemon, 1, seconds=0.3)
    ask_until_the_reply_begins(loopback, daemon)
    server.call(server.server.close_all, 1011, "Internal error")
    daemon.wait_until(lambda s: s["state"] == "idle" and s["connected"], 15, "back in idle")
    second = server.log.connections()[1]
    assert handle_in_setup(second.setup)
    assert daemon.wait_for_records(LIVE_FAILURE="closed", LIVE_CLOSE_CODE=1011)
    assert_clean(daemon, server)


def test_a_dropped_tcp_connection_is_resumed_and_the_history_kept(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig(merged({"audio": {"earcons": False}}), reply_seconds=0.5)
    one_turn(loopback, daemon, 1)
    server.call(server.server.drop)
    daemon.wait_until(lambda s: s["connections"] == 2 and s["connected"], 15, "reconnected")
    recorder = loopback.record(SPEAKER_RATE)
    recorder.wait_started()
    one_turn(loopback, daemon, 2)
    time.sleep(0.3)
    reply_heard(recorder.stop(), turn=2, seconds=0.5)  # the server's turn 2: history kept
    assert_clean(daemon, server)


def test_a_service_refusing_setups_for_a_few_seconds_keeps_the_conversation(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """1011 at every setup for a moment (a service in trouble) is also what a session
    still held answers: three refusals within a second threw the history away."""
    server, daemon = make_rig(merged({"audio": {"earcons": False}}), reply_seconds=0.5)
    one_turn(loopback, daemon, 1)
    server.server.config.refuse_setup = (1011, "Internal error encountered.")
    server.call(server.server.drop)
    server.wait_for(lambda: sum(c.close_code == 1011 for c in server.log.connections()) >= 3, 10)
    server.server.config.refuse_setup = None
    daemon.wait_until(lambda s: s["connected"] and s["connections"] == 2, 15, "resumed")
    recorder = loopback.record(SPEAKER_RATE)
    recorder.wait_started()
    one_turn(loopback, daemon, 2)
    time.sleep(0.3)
    reply_heard(recorder.stop(), turn=2, seconds=0.5)  # the server's turn 2: history kept
    assert "starting a new one" not in daemon.log()
    assert_clean(daemon, server)


def test_hands_free_between_connections_the_leds_say_connecting_and_the_words_go_through(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """The service away for a few seconds in a conversation: the LEDs said listening all
    along, with nothing reaching it. Now connecting until it is back, then listening,
    and what the person said meanwhile reaches it."""
    server, daemon = make_rig(merged({"button": {"mode": "toggle"}, "audio": {"earcons": False},
                                      "conversation": {"end_after_silence_s": 60}}))
    daemon.ctl("press")
    daemon.wait_until(lambda s: s["state"] == "listening" and s["connected"], 10, "listening")
    server.server.config.refuse_setup = (1013, "Try again later")
    server.call(server.server.drop)
    daemon.wait_until(lambda s: not s["connected"], 10, "the drop noticed")
    away = daemon.status()
    server.wait_for(lambda: sum(c.close_code == 1013 for c in server.log.connections()) >= 2, 10)
    speech = chirp(1.0)
    loopback.play(speech, MIC_RATE).wait()
    server.server.config.refuse_setup = None
    back = daemon.wait_until(lambda s: s["connected"] and s["state"] == "listening", 15, "back")
    assert away["state"] == "connecting", away["state"]
    states = [entry["state"] for entry in back["states"]]
    dropped = states.index("connecting", states.index("listening"))
    # The words, sent once it is back, may well have their reply by now: what matters is
    # what follows the drop.
    assert states[dropped : dropped + 2] == ["connecting", "listening"], states
    assert "error" not in states
    def words_arrived() -> bool:
        received = pcm.to_float(server.log.audio_in())
        return received.size > MIC_RATE and pcm.find_offset(received, said)[1] > 0.9

    said = pcm.to_float(speech)
    server.wait_for(words_arrived, 10)


def back_while_the_box_waits_long(server: ServerThread) -> None:
    """The service drops the connection and refuses setups until the box's backoff has
    grown to seconds, then takes them again while the box waits (its fourth wait, 2-4 s)."""
    server.server.config.refuse_setup = (1013, "Try again later")
    server.call(server.server.drop)
    server.wait_for(lambda: sum(c.close_code == 1013 for c in server.log.connections()) >= 4, 20)
    server.server.config.refuse_setup = None
    time.sleep(0.2)


def test_a_press_while_the_box_waits_to_reconnect_tries_at_once(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """Push-to-talk, the session kept between turns: the service drops and refuses setups
    a while, the backoff grows to seconds. A press once it is back connects now; it
    waited out the rest of the backoff (3.8 s here), the LEDs saying connecting."""
    server, daemon = make_rig(merged({"live": {"reconnect_for_s": 30}}), reply_seconds=0.3)
    one_turn(loopback, daemon, 1)
    back_while_the_box_waits_long(server)
    pressed = time.monotonic()
    daemon.ctl("press")
    daemon.wait_until(lambda s: s["connected"], 10, "connected")
    waited = time.monotonic() - pressed
    loopback.play(chirp(0.4), MIC_RATE).wait()
    daemon.ctl("release")
    daemon.wait_until(turns_done(2), 20, "turn 2")
    assert waited < 1.0, f"the press waited {waited:.1f} s with the service back"
    assert_clean(daemon, server)


def test_hands_free_words_said_while_the_box_waits_to_reconnect_try_at_once(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """Hands-free there is no press: a person who starts talking while the box waits out
    its backoff starts a turn as one. They waited out the rest of the wait (2-4 s here)
    with the LEDs saying connecting, their words held."""
    server, daemon = make_rig(merged({"button": {"mode": "toggle"}, "audio": {"earcons": False},
                                      "conversation": {"end_after_silence_s": 60},
                                      "live": {"reconnect_for_s": 30}}))  # fmt: skip
    daemon.ctl("press")
    daemon.wait_until(lambda s: s["state"] == "listening" and s["connected"], 10, "listening")
    back_while_the_box_waits_long(server)
    spoke = time.monotonic()
    playing = loopback.play(chirp(1.0), MIC_RATE)
    daemon.wait_until(lambda s: s["connected"], 10, "connected")
    waited = time.monotonic() - spoke
    playing.wait()
    assert waited < 1.0, f"the words waited {waited:.1f} s with the service back"
    assert_clean(daemon, server)


def test_a_service_that_moves_every_connection_on_early_keeps_the_conversation(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """goAway two seconds after each setup (every connection works): planned moves, not
    failures. The box counted them as such, waited out a growing backoff with no
    connection, and gave up with the error state after reconnect_for_s."""
    server, daemon = make_rig(
        merged({"button": {"mode": "toggle"}, "audio": {"earcons": False},
                "conversation": {"end_after_silence_s": 60}}),
        connection_lifetime_s=3.0, go_away_before_s=1.0,
    )  # fmt: skip
    daemon.ctl("press")
    daemon.wait_until(lambda s: s["state"] == "listening" and s["connected"], 10, "listening")
    time.sleep(20)  # past reconnect_for_s (15)
    status = daemon.status()
    states = [entry["state"] for entry in status["states"]]
    assert "error" not in states and status["state"] in ("listening", "connecting"), states
    assert len(server.log.connections()) >= 8, "each move went at once"
    assert "gave up" not in daemon.log()
    daemon.ctl("press")  # hang up
    daemon.wait_until(lambda s: s["state"] == "idle", 10, "idle")


def test_a_30_second_stall_is_detected_and_a_new_session_takes_over(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig(RESILIENT, reply_seconds=0.3)
    one_turn(loopback, daemon, 1)
    stalled = time.monotonic()
    server.call(server.server.stall, 30.0)
    status = daemon.wait_until(
        lambda s: s["connected"] and s["connections"] >= 2, 20, "a new connection"
    )
    assert time.monotonic() - stalled < 20
    log = daemon.log()
    assert "no traffic from the Live API" in log
    # The stalled connection still holds the session at the server (1011 on resume):
    # after a few refusals the device starts a new session rather than wait 30 s.
    assert "starting a new one" in log
    assert status["state"] == "idle" and status["session_open"]
    one_turn(loopback, daemon, 2)
    assert_clean(daemon, server)


def test_a_stall_while_the_person_talks_is_noticed_though_the_link_is_full(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """Speech fills the stalled link until sending blocks; the liveness check must not
    wait behind it (a ping queued behind the full link is never answered)."""
    # Long enough for the link to fill (a few seconds of speech) before the verdict.
    settings = merged({"live": {"dead_after_s": 8}})
    server, daemon = make_rig(settings, reply_seconds=0.3, uplink_bytes_per_s=2_000_000)
    one_turn(loopback, daemon, 1)
    daemon.ctl("press")
    player = loopback.play(chirp(20.0), MIC_RATE)
    try:
        time.sleep(0.5)
        server.call(server.server.stall, 30.0)
        daemon.wait_until(
            lambda s: s["connections"] >= 2 and s["connected"], 18, "a new connection"
        )
        assert daemon.status()["state"] == "listening", "the person is still talking"
    finally:
        player.stop()
    daemon.ctl("release")
    daemon.wait_until(turns_done(2), 20, "the turn to end on the new connection")
    assert daemon.wait_for_records(LIVE_FAILURE="silent")
    assert_clean(daemon, server)


# ---- no service at the press -----------------------------------------------------------------


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word (no TLS handshake)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def failures(daemon: Daemon) -> list[dict[str, Any]]:
    """The journal's records of the Live link failing (each names the layer: LIVE_FAILURE)."""
    return [record for record in daemon.records() if "LIVE_FAILURE" in record]


def _press_shows_error(daemon: Daemon, within: float) -> dict[str, Any]:
    pressed = time.monotonic()
    daemon.ctl("press")
    status = daemon.wait_until(lambda s: s["leds"][-1] == "error", within + 3, "the error pattern")
    assert time.monotonic() - pressed < within + 1.0
    daemon.ctl("release")
    return status


@pytest.mark.parametrize("where", ["refused", "blackholed"])
def test_no_service_at_the_press_shows_an_error_in_bounded_time_and_the_next_press_retries(
    loopback: PulseLoopback, make_rig: Any, blackhole: int, where: str
) -> None:
    port = closed_port() if where == "refused" else blackhole
    server, daemon = make_rig(merged({"live": {"base_url": f"https://127.0.0.1:{port}"}}))
    status = _press_shows_error(daemon, within=2.0)
    expected = "TCP: connection refused" if where == "refused" else "no answer from the Live API"
    assert expected in status["status"]
    daemon.wait_until(lambda s: s["state"] == "idle", 5, "idle after the error")
    time.sleep(2.0)  # idle: no retries on its own
    assert len(failures(daemon)) == 1
    _press_shows_error(daemon, within=2.0)
    daemon.wait_for_records(2, timeout=2.0, match=lambda record: "LIVE_FAILURE" in record)
    time.sleep(0.5)
    assert len(failures(daemon)) == 2, "one failure logged per press"
    assert_clean(daemon, server)


def test_one_failed_setup_at_the_press_is_tried_again_and_the_turn_answered(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """A service briefly in trouble (1011 at one setup) cost the whole turn: the error
    earcon, the person's words dropped."""
    server, daemon = make_rig(RESILIENT)
    server.server.config.refuse_setup = (1011, "Internal error encountered.")
    speech = chirp(1.5)
    pressed = time.monotonic()
    daemon.ctl("press")
    server.wait_for(lambda: any(c.close_code == 1011 for c in server.log.connections()), 5)
    server.server.config.refuse_setup = None  # the next setup succeeds
    loopback.play(speech, MIC_RATE).wait()
    time.sleep(0.15)
    daemon.ctl("release")
    daemon.wait_until(turns_done(1), 20, "the turn answered")
    assert len(server.log.connections()) == 2
    assert "error" not in [entry["state"] for entry in daemon.status()["states"]]
    assert_received_whole(
        server.log.activity_audio(after=pressed), speech, loopback.heard(pressed)
    )
    assert not failures(daemon), "no failure an owner has to look at"
    assert_clean(daemon, server)


def test_a_rejected_key_is_an_error_naming_the_key_and_is_not_retried(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig(RESILIENT, api_keys={"some-other-key"})
    status = _press_shows_error(daemon, within=2.0)
    assert "refused the API key" in status["status"]
    assert daemon.wait_for_records(LIVE_FAILURE="closed", LIVE_CLOSE_CODE=1008)
    time.sleep(2.0)
    assert len(server.log.connections()) == 1, "no retries until the next press"
    assert_clean(daemon, server)


def test_a_refused_setup_is_an_error_naming_the_setting(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    reason = "Invalid argument: speech_config is not supported by this model."
    server, daemon = make_rig(RESILIENT, refuse_setup=(1007, reason))
    status = _press_shows_error(daemon, within=2.0)
    assert "refused as invalid" in status["status"] and "speech_config" in status["status"]
    time.sleep(1.5)
    assert len(server.log.connections()) == 1
    assert_clean(daemon, server)


# ---- what the service sends ----------------------------------------------------------------


def _camel_fields(model: Any) -> set[str]:
    """The wire names (camelCase) of a message type the SDK knows."""
    return {"".join(w.title() if i else w for i, w in enumerate(name.split("_")))
            for name in model.model_fields}


KNOWN = _camel_fields(types.LiveServerMessage)
KNOWN_CONTENT = _camel_fields(types.LiveServerContent)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8,
)
_names = st.text(alphabet=string.ascii_letters, min_size=3, max_size=16)
unknown_messages = st.builds(
    lambda name, body: json.dumps({name: body}).encode(),
    _names.filter(lambda n: n not in KNOWN),
    _json,
)
unknown_fields = st.builds(
    lambda name, body: json.dumps({"serverContent": {name: body}}).encode(),
    _names.filter(lambda n: n not in KNOWN_CONTENT),
    _json,
)
junk = st.binary(min_size=1, max_size=64).filter(lambda b: not b.strip().startswith(b"{"))


@pytest.fixture
def served(loopback: PulseLoopback, make_rig: Any) -> tuple[ServerThread, Daemon]:
    server, daemon = make_rig(RESILIENT, reply_seconds=0.2)
    one_turn(loopback, daemon, 1, seconds=0.3)
    return server, daemon


def _settled(daemon: Daemon) -> dict[str, Any]:
    """Wait until the device is idle again with its session connected."""
    time.sleep(0.05)
    return daemon.wait_until(
        lambda s: s["connected"] and s["state"] == "idle" and s["session_open"], 10,
        "the device to settle",
    )


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=st.one_of(unknown_messages, unknown_fields))
def test_unknown_messages_are_ignored(served: tuple[ServerThread, Daemon], frame: bytes) -> None:
    server, daemon = served
    before = daemon.status()["connections"]
    server.call(server.server.send_raw, frame, server.server.connection().id)
    settled = _settled(daemon)
    assert settled["connections"] == before, "a readable message must not end the connection"
    assert "Traceback" not in daemon.log()


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=junk)
def test_junk_ends_only_the_connection(
    loopback: PulseLoopback, served: tuple[ServerThread, Daemon], frame: bytes
) -> None:
    # A junk frame may cost the connection, never the session: the turn after it proves
    # that, and having completed, lets the next connection start without backoff (frames
    # sent back to back with no turn between are a storm the box rightly gives up on).
    server, daemon = served
    server.call(server.server.send_raw, frame, server.server.connection().id)
    _settled(daemon)
    one_turn(loopback, daemon, daemon.status()["turns"][-1]["turn"] + 1, seconds=0.3)
    assert "Traceback" not in daemon.log()


def test_after_junk_and_unknown_messages_a_turn_still_works(
    loopback: PulseLoopback, served: tuple[ServerThread, Daemon]
) -> None:
    server, daemon = served
    for frame in (b'{"brandNew": {"x": 1}}', b"\xff\xfe not json", b'{"serverContent": {"z": 2}}'):
        server.call(server.server.send_raw, frame, server.server.connection().id)
        time.sleep(0.3)
        daemon.wait_until(lambda s: s["connected"], 10, "connected")
    one_turn(loopback, daemon, 2, seconds=0.3)
    assert daemon.status()["connections"] == 2, "only the junk frame ended a connection"
    assert_clean(daemon, server)


# ---- long sessions ---------------------------------------------------------------------------


def _talk_for(loopback: PulseLoopback, daemon: Daemon, seconds: float) -> int:
    """Push-to-talk turns back to back for `seconds`; returns how many completed."""
    turns = daemon.status()["turns"]
    done, end = (turns[-1]["turn"] if turns else 0), time.monotonic() + seconds
    while time.monotonic() < end:
        done += 1
        one_turn(loopback, daemon, done, seconds=0.3)
    return done


def test_a_20_minute_session_with_compression_lives_through_two_connection_lifetimes(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    # The server's clock runs 120 times faster: 20 service minutes in 10 s.
    server, daemon = make_rig(
        RESILIENT, reply_seconds=0.2, time_scale=120, connection_lifetime_s=600,
        go_away_before_s=60, session_limits=True,
    )
    turns = _talk_for(loopback, daemon, 11.0)
    connections = server.log.connections()
    assert len(connections) >= 3, "two goAways, two switches"
    assert all(handle_in_setup(c.setup) for c in connections[1:]), "every switch resumed"
    assert "error" not in daemon.status()["leds"]
    assert turns >= 5
    assert_clean(daemon, server)


def test_without_compression_the_service_cuts_the_session_and_a_new_one_starts(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig(
        merged({"live": {"compression": False}}), reply_seconds=0.2, time_scale=120,
        session_limits=True,
    )
    _talk_for(loopback, daemon, 9.0)  # past 15 service minutes
    connections = server.log.connections()
    expired = next(i for i, c in enumerate(connections) if c.close_code == 1011)
    assert daemon.wait_for_records(LIVE_CLOSE_CODE=1011), "the session's end reached the box"
    fresh = connections[expired + 1 :]
    assert fresh and not handle_in_setup(fresh[-1].setup), "a new session, not a resumed one"
    one_turn(loopback, daemon, daemon.status()["turns"][-1]["turn"] + 1, seconds=0.3)
    assert_clean(daemon, server)


# ---- the box's own hardware ---------------------------------------------------------------------


def test_an_audio_device_that_disappears_is_an_error_until_it_comes_back(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    server, daemon = make_rig(merged({"audio": {"reopen_s": 1}}), reply_seconds=0.3)
    one_turn(loopback, daemon, 1)
    loopback.unload_sink("mic")
    loopback.unload_sink("speaker")
    try:
        status = daemon.wait_until(
            lambda s: s["state"] == "error" and len(s["faults"]) == 2, 10, "both devices lost"
        )
        assert status["faults"] == ["microphone", "speaker"]
        assert "microphone" in status["status"] or "speaker" in status["status"]
        daemon.ctl("press")  # a press while the microphone is gone changes nothing
        time.sleep(0.5)
        assert daemon.status()["state"] == "error"
        daemon.ctl("release")
    finally:
        loopback.load_sinks("mic", "speaker")
    daemon.wait_until(lambda s: s["state"] == "idle" and not s["faults"], 15, "recovery")
    recorder = loopback.record(SPEAKER_RATE)
    recorder.wait_started()
    speech = chirp(0.8)
    pressed = speak_turn(loopback, daemon, speech)
    daemon.wait_until(turns_done(2), 20, "a turn after recovery")
    time.sleep(0.3)
    assert_received_whole(
        server.log.activity_audio(after=pressed), speech, loopback.heard(pressed)
    )
    # The fault ended the session: this reply is the first of a new one, on the reopened speaker.
    reply_heard(recorder.stop(), turn=1, seconds=0.3)
    assert_clean(daemon, server)


def test_a_close_from_a_service_that_no_longer_reads_is_seen_within_a_second(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """A service that closes (1011) while the box streams may stop reading what the box
    still sends, its answer to the close too: websockets waited its 10 s default for the
    service to finish the close, the box on a dead connection, the person's speech lost
    into it (seen against a flapping service in 2 of 5 connections)."""
    server, daemon = make_rig(RESILIENT)
    daemon.ctl("press")  # held: the microphone streams
    daemon.wait_until(lambda s: s["connected"], 10, "connected")
    server.call(server.server.stall)  # it reads nothing more...
    closing = time.monotonic()  # ...and closes (in the background: it waits 10 s itself)
    server.call(lambda: [asyncio.ensure_future(server.server.close_all(1011, "Internal error"))])
    daemon.wait_until(lambda s: s["connections"] == 2 and s["connected"], 15, "reconnected")
    # Seen within CLOSE_TIMEOUT_S, then the paced wait (at most 0.5 s) and a setup.
    assert time.monotonic() - closing < 3.0
    daemon.ctl("release")
    daemon.wait_until(turns_done(1), 20, "the turn answered on the new connection")


def test_a_service_that_closes_every_connection_after_setup_is_not_hammered(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """Backoff survives the setups that succeed; after reconnect_for_s the box gives up:
    the error state, and no more connections until the next press."""
    server, daemon = make_rig(
        merged({"live": {"reconnect_for_s": 12}}),
        close_after_setup=(1011, "Internal error"),
    )
    status = given_up_unhammered(server, daemon)
    assert "gave up" in status["status"]
    count = len(server.log.connections())  # as many as when it gave up
    daemon.ctl("release")
    daemon.ctl("press")
    server.wait_for(lambda: len(server.log.connections()) > count, 10)


def test_on_the_daemon_a_reply_sent_whole_plays_to_its_end_across_a_drop(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """The same on the real daemon and its loopback speaker: a 20 s reply sent at once, the
    TCP connection dropped a second later; the person hears all 20 s, then talks on."""
    config = {"audio": {"earcons": False}, "live": {"keepalive_s": 1, "dead_after_s": 4}}
    server, daemon = make_rig(config, reply_seconds=0.3)
    speak_turn(loopback, daemon, chirp(0.3))  # a handle to resume with
    daemon.wait_until(turns_done(1), 20, "turn 1 to end")
    assert server.server is not None
    server.server.config.pace, server.server.config.reply_seconds = 0, 20.0
    recorder = loopback.record(SPEAKER_RATE)
    recorder.wait_started()
    speak_turn(loopback, daemon, chirp(0.3))
    server.wait_for(lambda: server.log.kinds(direction="out").count("turn_complete") >= 2, 10)
    daemon.wait_until(lambda s: s["state"] == "speaking", 10, "the reply")
    time.sleep(1.0)
    server.call(server.server.drop)
    daemon.wait_until(turns_done(2), 40, "the reply to finish")
    time.sleep(0.3)
    reply_heard(recorder.stop(), turn=2, seconds=20.0)
    server.server.config.reply_seconds = 0.3
    speak_turn(loopback, daemon, chirp(0.3))
    daemon.wait_until(turns_done(3), 20, "turn 3 to end")
    assert len(server.log.connections()) == 2
    assert_clean(daemon, server)


async def test_a_blackholed_service_fails_the_press_within_the_default_5_s(
    server: LiveServer, blackhole: int
) -> None:
    cfg = config_for(server, live={"base_url": f"https://127.0.0.1:{blackhole}"})
    assert cfg.live.connect_timeout_s == 5.0
    pressed = time.monotonic()
    outcome = await first_outcome(cfg)
    took = time.monotonic() - pressed
    assert isinstance(outcome, ConnectFailed), outcome
    assert took < 6.0, f"the error came {took:.1f} s after the press"


async def test_a_service_that_never_completes_the_setup_fails_within_5_s(
    server: LiveServer,
) -> None:
    server.config.setup_delay = 6.5  # past the bound: the press must not wait for it
    pressed = time.monotonic()
    outcome = await first_outcome(config_for(server))
    took = time.monotonic() - pressed
    assert isinstance(outcome, ConnectFailed), outcome
    assert took < 6.0, f"the error came {took:.1f} s after the press"


class HandlesThenDrop:
    """The first connection gives a resumable handle, then a newer one marked not
    resumable (the model is generating), then drops; every later one stays open. The
    handle each connection was opened with is kept."""

    session_id = "s"

    def __init__(self) -> None:
        self.aio = self.live = self
        self.resumed: list[str | None] = []

    @contextlib.asynccontextmanager
    async def connect(self, **options: Any) -> AsyncIterator[HandlesThenDrop]:
        self.resumed.append(options["config"].session_resumption.handle)
        yield self

    async def receive(self) -> AsyncIterator[types.LiveServerMessage]:
        if len(self.resumed) == 1:
            for handle, resumable in (("h1", True), ("h2", False)):
                update = types.LiveServerSessionResumptionUpdate(
                    new_handle=handle, resumable=resumable
                )
                yield types.LiveServerMessage(session_resumption_update=update)
            raise ConnectionError("connection reset by peer")
        await asyncio.Event().wait()
        yield types.LiveServerMessage()  # never: an async generator, as the SDK's

    async def close(self) -> None: ...


async def test_a_handle_not_marked_resumable_is_never_resumed_with() -> None:
    service = HandlesThenDrop()
    link = link_to(service)
    link.open(1)
    try:
        await until(lambda: len(service.resumed) >= 2, within=10)
    finally:
        await link.close()
    assert service.resumed[:2] == [None, "h1"]




def test_a_close_from_a_service_that_no_longer_reads_is_seen_when_the_box_is_quiet(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """The same service, hands-free in a quiet room: the box answered the close and had
    nothing more to send, and websockets enforces its close timeout only on a send. It sat
    on the dead connection for 10 s; a service failing right after each setup while the
    box's first held audio filled what it read was then never given up on (such a
    connection lasted long enough to count as working)."""
    server, daemon = make_rig({"button": {"mode": "toggle"}, "live": {"connect_timeout_s": 2}})
    daemon.ctl("press")
    daemon.wait_until(lambda s: s["connected"], 10, "connected")
    time.sleep(2)  # a quiet room: after a second the microphone's silence is held back
    first = server.log.connections()[0].id
    sent = server.log.kinds(first, "in")
    server.call(server.server.stall)  # it reads nothing more...
    closing = time.monotonic()  # ...and closes (in the background: it waits 10 s itself)
    server.call(lambda: [asyncio.ensure_future(server.server.close_all(1011, "Internal error"))])
    daemon.wait_until(lambda s: s["connections"] == 2 and s["connected"], 15, "reconnected")
    # Seen within CLOSE_TIMEOUT_S, then the paced wait (at most 0.5 s) and a setup.
    assert time.monotonic() - closing < 3.0
    assert server.log.kinds(first, "in") == sent, "it had nothing to send meanwhile"
