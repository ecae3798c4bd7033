"""Hands-free over a long day in a kitchen: what the family hears and sees, the state
machine on a clock the test moves (minutes in milliseconds), through the same timers the
appliance arms."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from fakes import config, running
from helpers import until
from test_replies_after_tools import DEFAULTS, SILENCE_S, Clock
from test_states import DONE, INTERRUPTED, REPLY, SETUP

from device.states import (
    Earcon,
    Machine,
    Mode,
    PlaybackDrained,
    Pressed,
    ReplyAudio,
    SetupComplete,
    SpeechHeard,
    State,
    TextTurn,
    Timer,
    TurnComplete,
)

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
