"""The conversation nobody ended, and the one that runs long: a push-to-talk press held
for minutes across the service's connection limits, through the local server and the
real google-genai SDK (in-process, no sound server)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fakes import running
from helpers import until
from test_go_away import WITHIN_MS, heard_ms, talking
from test_vertex_token import RealLinkParts
from wire import config_for

from device.audio.capture import PRESS_LAG_S
from device.config import Config
from device.live.session import _wire_turn
from device.live.turn import UNSAVED_MOST_S, WireTurn, unsaved_limit
from device.live.wire import MIC_RATE
from device.states import Reconnected
from rig.server.server import LiveServer

SECOND = b"\x01\x00" * MIC_RATE


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LiveServer]:
    async with LiveServer(pace=0, reply_seconds=0.2) as live:
        monkeypatch.setenv("SSL_CERT_FILE", live.ca_file)
        yield live


async def test_a_press_held_ninety_seconds_through_a_go_away_reaches_the_service_whole(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Someone reads a long text aloud, the button held 90 s (under `longest_turn_s`, 120
    s by default), and the service moves the conversation near the end. No handle covers
    the open turn, so all of it goes again on the next connection: the model must hear
    the whole 90 s, not only the newest minute of it with nothing said about the rest."""
    caplog.set_level(logging.INFO)
    async with talking(server) as talk:
        await talk.first_turn(server)
        talk.outbox.put("activity_start")
        for _ in range(90):  # ninety seconds of reading, handed on faster than real time
            talk.outbox.put("audio", SECOND)
            await until(lambda: talk.outbox.held_ms == 0, within=5)
        await server.send_go_away("0.5s")  # less than the switch margin: at once
        await until(lambda: any(isinstance(e, Reconnected) for e in talk.events), within=10)
        talk.outbox.put("activity_end")
        await until(lambda: len(heard_ms(server)) == 1, within=20)
    assert heard_ms(server) == [pytest.approx(90_000, abs=WITHIN_MS)], "the text heard whole"


def test_a_press_held_past_what_is_kept_says_what_a_switch_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An owner's `longest_turn_s` of an hour: the box keeps UNSAVED_MOST_S of the open
    press to send again (memory), and a switch past that says how much of it is lost."""
    turn = WireTurn(unsaved_limit=unsaved_limit(3600))
    turn.sent("activity_start")
    for _ in range(int(UNSAVED_MOST_S) + 2):
        turn.spoke(SECOND)
    with caplog.at_level(logging.WARNING):
        again = turn.words_to_repeat()
    assert len(b"".join(again)) == len(SECOND) * int(UNSAVED_MOST_S)
    assert "its first 2 s are lost" in caplog.text


async def test_a_press_that_ends_the_conversation_during_a_reconnect_opens_no_session_after(
    server: LiveServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Wake button: the service drops the connection and will not take the next ones (a
    1011 at each setup), the box connecting again; the person presses to end the
    conversation. It ends at once (idle, the microphone and camera off) and no connection
    is tried after the press."""
    caplog.set_level(logging.INFO)
    cfg = config_for(server, button={"mode": "toggle"})
    async with running(tmp_path, cfg, parts_class=RealLinkParts) as box:
        await box.ctl("press")
        await until(lambda: box.state == "listening", within=10)
        server.config.refuse_setup = (1011, "Internal error")
        server.drop()
        await until(lambda: len(server.log.connections()) >= 3, within=10)
        await box.ctl("press")
        tried = len(server.log.connections())
        assert box.state == "idle", box.states()
        assert not box.mic.forwarding and not box.camera.running
        await asyncio.sleep(3)  # longer than the first waits between tries
        assert len(server.log.connections()) == tried, "a connection tried after the press"
        assert not box.appliance.link.is_open


async def test_a_press_that_ends_the_conversation_as_the_camera_switches_off_opens_no_session(
    server: LiveServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Wake button: the service drops the connection and the person presses to end the
    conversation. The camera takes its time to switch off (seconds on a Pi); the link must
    not reconnect meanwhile: the box shows idle, and a session resumed behind its back
    (the service charging for it, its microphone's next words for nobody) is one too many."""
    caplog.set_level(logging.INFO)
    cfg = config_for(server, button={"mode": "toggle"})
    async with running(tmp_path, cfg, parts_class=RealLinkParts) as box:
        await box.ctl("press")
        await until(lambda: box.state == "listening", within=10)
        assert box.camera.running
        box.camera.hang = asyncio.Event()  # switching off takes a while
        server.drop()
        await until(lambda: box.state == "connecting", within=10)
        tried = len(server.log.connections())
        await box.control.ask("press")
        await until(lambda: box.state == "idle")
        try:
            await asyncio.sleep(2)  # the camera still switching off
            assert len(server.log.connections()) == tried, "a connection after the press"
        finally:
            box.camera.hang.set()
        await box.settle()
        assert not box.appliance.link.is_open


async def test_a_stop_during_a_reconnect_opens_no_session_as_the_camera_switches_off(
    server: LiveServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`systemctl stop` (an update, a reboot) as the Wi-Fi blips mid-conversation: the
    camera takes its time to switch off, and the link must not reconnect meanwhile (a
    session set up for a daemon that is stopping, "session ready" after "stopping")."""
    caplog.set_level(logging.INFO)
    cfg = config_for(server, button={"mode": "toggle"})
    async with running(tmp_path, cfg, parts_class=RealLinkParts) as box:
        await box.ctl("press")
        await until(lambda: box.state == "listening", within=10)
        box.camera.hang = asyncio.Event()  # switching off takes a while
        server.drop()
        await until(lambda: box.state == "connecting", within=10)
        tried = len(server.log.connections())
        box.appliance.stopping.set()
        try:
            await asyncio.sleep(2)  # the camera still switching off
            assert len(server.log.connections()) == tried, "a connection after the stop"
        finally:
            box.camera.hang.set()


TENTH = b"\x01\x00" * (MIC_RATE // 10)


def test_a_press_held_to_the_longest_turn_goes_again_whole_after_a_switch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The longest turn runs `longest_turn_s` from when the box takes the press, and its
    audio reaches back before that: to the button's edge (up to PRESS_LAG_S earlier, the
    box busy switching the camera off) and the pre-roll before it. What is kept to send
    again was `longest_turn_s` alone, so a goAway near the end of a long reading lost its
    first words, and the journal said "its first 0 s are lost"."""
    cfg = Config()
    turn = _wire_turn(cfg)
    turn.sent("activity_start")
    held_s = cfg.conversation.longest_turn_s + PRESS_LAG_S + cfg.audio.preroll_ms / 1000
    tenths = round(held_s * 10)
    for _ in range(tenths):
        turn.spoke(TENTH)
    with caplog.at_level(logging.WARNING):
        again = turn.words_to_repeat()
    assert sum(map(len, again)) == len(TENTH) * tenths, "the whole press again"
    assert "lost" not in caplog.text


def test_a_short_press_after_a_long_one_is_not_said_cut_at_a_switch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A press held past what is kept, answered; then a short question, the connection
    switched under it (a goAway): all of it goes again, and the journal does not say its
    first seconds were lost, which were the long press's."""
    turn = WireTurn(unsaved_limit=unsaved_limit(3600))
    turn.sent("activity_start")
    for _ in range(int(UNSAVED_MOST_S) + 2):
        turn.spoke(SECOND)
    turn.sent("activity_end")
    turn.sent("activity_start")
    for _ in range(3):
        turn.spoke(SECOND)
    with caplog.at_level(logging.WARNING):
        again = turn.words_to_repeat()
    assert len(b"".join(again)) == 3 * len(SECOND)
    assert "are lost" not in caplog.text, caplog.text


def test_hands_free_keeps_its_minute_to_send_again_with_a_short_longest_turn_s() -> None:
    """An owner's `longest_turn_s` of 10 s bounds a push-to-talk press, not what a
    hands-free conversation keeps to send again after a drop: a 20 s question, cut by a
    drop, reaches the next connection whole (the newest minute is kept)."""
    turn = WireTurn(unsaved_limit=unsaved_limit(10), answer_within_s=120)
    for _ in range(20):
        turn.sent("audio")
        turn.spoke(SECOND)
    assert len(b"".join(turn.words_to_repeat())) == 20 * len(SECOND)


# --- the journal over an hour ---------------------------------------------------------


def test_a_press_just_past_what_is_kept_says_how_little_a_switch_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A press held a moment past what is kept to send again (UNSAVED_MOST_S), and the
    connection switched under it: the journal said "its first 0 s are lost", a loss of
    nothing in the owner's reading. It says the fraction it was."""
    chunk = b"\x01\x00" * (MIC_RATE // 25)  # 40 ms, as the microphone hands them on
    turn = WireTurn(unsaved_limit=unsaved_limit(3600))
    turn.sent("activity_start")
    for _ in range(round(UNSAVED_MOST_S * 25) + 1):
        turn.spoke(chunk)
    with caplog.at_level(logging.WARNING):
        turn.words_to_repeat()
    assert "its first 0.04 s are lost" in caplog.text, caplog.text
