"""The conversation nobody ended, and the one that runs long: a push-to-talk press held
for minutes across the service's connection limits, through the local server and the
real google-genai SDK (in-process, no sound server)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from fakes import config, running
from helpers import until
from hypothesis import given, settings
from hypothesis import strategies as st
from test_go_away import WITHIN_MS, heard_ms, talking
from test_replies_after_tools import DEFAULTS, SESSION, SILENCE_S, Clock
from test_states import DONE, INTERRUPTED, REPLY, SETUP
from test_vertex_token import RealLinkParts
from wire import config_for

from device.audio.capture import PRESS_LAG_S
from device.config import Config
from device.live.session import _wire_turn
from device.live.turn import UNSAVED_MOST_S, WireTurn, unsaved_limit
from device.live.wire import MIC_RATE
from device.states import (
    Earcon,
    EndConversation,
    Event,
    Interrupted,
    Machine,
    Mode,
    PlaybackDrained,
    Pressed,
    Reconnected,
    Reconnecting,
    Released,
    ReplyAudio,
    ReplyDropped,
    SetupComplete,
    SpeechHeard,
    State,
    TextTurn,
    Timer,
    ToolsAtWork,
    TurnComplete,
)
from rig.server.server import LiveServer

SECOND = b"\x01\x00" * MIC_RATE


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


#: How soon the model's first words follow a text turn: a second or two on a good day.
TEXT_REPLY_S = 2.0


def test_hands_free_a_hooks_words_late_in_a_quiet_moment_are_answered_not_hung_up_on() -> None:
    """A conversation is open, the kitchen quiet a while; a home automation hook says
    "the washing machine has finished" (`ctl text`). The silence kept counting from the
    last word the microphone heard, not from the hook's words: it ran out while the
    model was about to answer them, the box hung up (the falling earcon, idle LEDs) and
    the answer was never heard."""
    clock = Clock(Machine(mode=Mode.TOGGLE), DEFAULTS)
    clock.feed(Pressed(), SETUP, SpeechHeard(from_the_room=True))
    clock.wait(SILENCE_S - TEXT_REPLY_S / 2)  # a quiet moment
    clock.feed(TextTurn("the washing machine has finished"))
    clock.wait(TEXT_REPLY_S)  # the model answers them
    assert clock.machine.session_open, "hung up before the hook's words were answered"
    clock.feed(REPLY)
    assert clock.states[-1] is State.SPEAKING, "the answer to the hook's words was not heard"
    assert Earcon.LISTEN_END not in clock.earcons


def an_answer_at_the_longest_conversation() -> Clock:
    """A family talks with the box for `longest_conversation_s` (15 min), a question a
    half-minute; the model begins an answer a second before that time is up."""
    clock = Clock(Machine(mode=Mode.TOGGLE), DEFAULTS)
    clock.feed(Pressed(), SETUP)
    longest = DEFAULTS[Timer.OPEN_MIC]
    while clock.now < longest - 30:
        clock.feed(SpeechHeard(from_the_room=True))
        clock.wait(5)
        clock.feed(REPLY, DONE)
        clock.wait(5)
        clock.feed(PlaybackDrained())
        clock.wait(20)
    clock.feed(SpeechHeard(from_the_room=True))  # the last question
    clock.wait(longest - 1 - clock.now)
    clock.feed(REPLY)
    assert clock.machine.state is State.SPEAKING and clock.machine.session_open
    return clock


def test_hands_free_the_longest_conversation_lets_the_answer_playing_end_then_hangs_up() -> None:
    """`longest_conversation_s` ran out as the model was answering: the box hung up at
    once, the answer cut mid-word (the speaker cleared, idle LEDs). The answer is heard
    to its end (its own timers bound it), then the conversation ends, as after a goodbye."""
    clock = an_answer_at_the_longest_conversation()
    clock.wait(2)  # the longest conversation runs out as the answer plays
    assert clock.states[-1] is State.SPEAKING, "the answer was cut off mid-word"
    assert clock.machine.session_open
    clock.feed(REPLY, DONE)
    clock.wait(4)
    clock.feed(PlaybackDrained())
    assert clock.states[-1] is State.IDLE and not clock.machine.session_open
    assert clock.earcons[-1] is Earcon.LISTEN_END


def test_hands_free_talking_over_the_last_answer_past_the_longest_still_hangs_up() -> None:
    """Past `longest_conversation_s`, the person talks over the answer: the conversation
    ends there, not listening on with no longest left to end it (a TV would keep it open
    for the rest of the day)."""
    clock = an_answer_at_the_longest_conversation()
    clock.wait(2)
    clock.feed(INTERRUPTED)
    assert clock.states[-1] is State.IDLE and not clock.machine.session_open


@pytest.mark.parametrize("gap_s", [1.0, 2.0, 3.0])
def test_hands_free_a_model_calling_tool_after_tool_still_hangs_up_past_the_longest(
    gap_s: float,
) -> None:
    """A tool hangs (the SD card stalls) and answers "timed out" after its 5 s; the model
    calls it again `gap_s` after each answer, never saying a word. The longest
    conversation ran out while it worked, and every call after that held back the
    goodbye's wait: the box stayed open for good, the microphone streaming to the
    service until someone pressed the button. Past `longest_conversation_s` the answer
    has its `longest_reply_s`, tools or not, then the box hangs up."""
    clock = Clock(Machine(mode=Mode.TOGGLE), DEFAULTS)
    clock.feed(Pressed(), SETUP, SpeechHeard(from_the_room=True))
    longest = DEFAULTS[Timer.OPEN_MIC] + DEFAULTS[Timer.LONG_REPLY]
    while clock.machine.session_open and clock.now < 2 * longest:
        clock.feed(ToolsAtWork(session=SESSION, calls=1))
        clock.wait(5.0)
        if clock.machine.session_open:
            clock.feed(ToolsAtWork(session=SESSION, calls=0))
            clock.wait(gap_s)
    assert not clock.machine.session_open, "the conversation never ended"
    assert clock.now <= longest + 5.0 + gap_s
    assert clock.states[-1] is State.IDLE


@pytest.mark.parametrize("mode", list(Mode))
def test_replies_chained_before_the_speaker_drains_still_end_the_session(mode: Mode) -> None:
    """A TV's words transcribed over each whole reply, and the service answers them, every
    2.5 s, before the speaker has drained the last: each answer replaced the one playing
    with a longest_reply_s of its own, and nobody at the box kept it speaking and its
    microphone streaming for good (push-to-talk, its idle timer never armed either).
    Past the longest conversation (hands-free) or where no press asked for them, they
    go on as one reply, which its longest_reply_s ends; then the box hangs up."""
    clock = Clock(Machine(mode=mode), {**DEFAULTS, Timer.IDLE: 300.0})
    clock.feed(Pressed(), SETUP)
    clock.feed(SpeechHeard(from_the_room=True) if mode is Mode.TOGGLE else Released())
    clock.feed(REPLY)
    while clock.machine.session_open and clock.now < 3000:
        clock.wait(0.5)
        clock.feed(DONE)
        clock.wait(2.0)
        clock.feed(SpeechHeard(), ReplyAudio(session=SESSION, pcm=b"\x01\x00", replaces=True))
    longest = DEFAULTS[Timer.LONG_REPLY]
    bound = DEFAULTS[Timer.OPEN_MIC] + longest if mode is Mode.TOGGLE else 3 * longest
    assert not clock.machine.session_open, "the box never stopped speaking"
    assert clock.now <= bound + 2.5


#: What the service can send on its own, none of it a person at the box (the words it
#: transcribes may be a TV's): the link's events for the session open now.
SERVICE_ALONE: list[Event] = [
    ReplyAudio(session=SESSION, pcm=b"\x01\x00"),
    ReplyAudio(session=SESSION, pcm=b"\x01\x00", replaces=True),
    TurnComplete(session=SESSION),
    TurnComplete(session=SESSION, more_to_come=True),
    Interrupted(session=SESSION),
    ReplyDropped(session=SESSION),
    ToolsAtWork(session=SESSION, calls=1),
    ToolsAtWork(session=SESSION, calls=0),
    Reconnecting(session=SESSION, reason="1011"),
    Reconnected(session=SESSION),
    EndConversation(session=SESSION),
    SpeechHeard(),
]
#: The speaker drains once this long has passed since the last audio it was given.
PLAYS_S = 3.0


@settings(max_examples=150, deadline=None)
@given(
    mode=st.sampled_from(Mode),
    cycle=st.lists(
        st.tuples(st.sampled_from(SERVICE_ALONE), st.sampled_from([0.5, 2.0, 5.0, 29.0, 31.0])),
        min_size=1,
        max_size=4,
    ),
)
def test_the_service_alone_cannot_keep_a_session_open(
    mode: Mode, cycle: list[tuple[Event, float]]
) -> None:
    """Nobody at the box after their first words; the service sends whatever it likes,
    over and over: the session ends within the longest conversation and one answer's
    longest_reply_s (hands-free), or the idle time and two answers' (push-to-talk)."""
    clock = Clock(Machine(mode=mode), {**DEFAULTS, Timer.IDLE: 300.0, Timer.ERROR: 5.0})
    clock.feed(Pressed(), SETUP)
    clock.feed(SpeechHeard(from_the_room=True) if mode is Mode.TOGGLE else Released())
    last_audio = -PLAYS_S
    longest, reply = DEFAULTS[Timer.LONG_REPLY], DEFAULTS[Timer.REPLY]
    bound = DEFAULTS[Timer.OPEN_MIC] if mode is Mode.TOGGLE else 300.0 + longest
    bound += longest + DEFAULTS[Timer.TOOL] + reply + 31.0
    while clock.machine.session_open and clock.now <= bound:
        for event, gap in cycle:
            clock.feed(event)
            if isinstance(event, ReplyAudio):
                last_audio = clock.now
            clock.wait(gap)
            if clock.now - last_audio >= PLAYS_S:
                clock.feed(PlaybackDrained())
    assert not clock.machine.session_open, f"open after {clock.now:.0f} s: {clock.machine}"


async def test_hands_free_the_longest_conversation_is_heard_out_and_named_in_the_journal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The running box: `longest_conversation_s` runs out as the answer plays. The speaker
    goes on with it (not cleared), the box hangs up once it has played, and the journal
    names the setting that ended the conversation (an owner asks why it stopped)."""
    caplog.set_level(logging.INFO, "device.appliance")
    cfg = config(button={"mode": "toggle"}, conversation={"longest_conversation_s": 0.3})
    async with running(tmp_path, cfg) as box:
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        box.link.deliver(ReplyAudio, pcm=b"\x01\x00" * 2400)
        await box.settle()
        assert box.state == "speaking"
        cleared = box.speaker.cleared
        await asyncio.sleep(0.5)  # the longest conversation runs out
        await box.settle()
        assert box.state == "speaking" and box.speaker.cleared == cleared, "the answer was cut"
        box.link.deliver(ReplyAudio, pcm=b"\x02\x00" * 2400)
        box.link.deliver(TurnComplete)
        await box.settle()
        heard = box.speaker.play()
        await until(lambda: box.state == "idle")
        answer = b"\x01\x00" * 2400 + b"\x02\x00" * 2400
        assert answer in heard, "the answer was not heard to its end"
        assert not box.camera.running and not box.mic.forwarding
    said = [r.getMessage() for r in caplog.records if r.name == "device.appliance"]
    assert any("[conversation] longest_conversation_s 0.3 s" in line for line in said), said
