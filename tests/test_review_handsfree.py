"""Hands-free over a long day in a kitchen: what the family hears and sees, the state
machine on a clock the test moves (minutes in milliseconds), through the same timers the
appliance arms."""

from __future__ import annotations

from test_replies_after_tools import DEFAULTS, SILENCE_S, Clock
from test_states import REPLY, SETUP

from device.states import Earcon, Machine, Mode, Pressed, SpeechHeard, State, TextTurn

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
