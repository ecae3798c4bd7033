"""Hands-free, the model calls a tool before a word of its reply ("what time is it?"):
the box must show it works, and the conversation's silence timer must wait for the
tool, not end the conversation while it works and lose its answer."""

from __future__ import annotations

import asyncio

import pytest
from google.genai import types
from test_replies_after_tools import (
    SECONDS,
    SESSION,
    Clock,
    Turn,
    audio,
    content,
)
from test_states import DONE, REPLY, SETUP, names, run

from device import states as s
from device.states import Earcon, Machine, Mode, PlaybackDrained, State, Timer

SILENCE_S = 30.0  # the default [conversation] end_after_silence_s
TOOL_TIMEOUT_S = 60.0  # a [tools] timeout_s above it, now allowed
CALLED = s.ToolsAtWork(session=1, calls=1)
ANSWERED = s.ToolsAtWork(session=1, calls=0)


def asked() -> Machine:
    """A hands-free conversation; the person has asked something."""
    m, _, _ = run(Machine(mode=Mode.TOGGLE), s.Pressed(), SETUP, s.SpeechHeard(True))
    assert m.state is State.LISTENING
    return m


def test_hands_free_a_tool_called_before_any_word_shows_thinking_and_holds_the_silence() -> None:
    m, seen, actions = run(asked(), CALLED)
    assert seen == [State.THINKING], "the LEDs said listening while the box worked"
    assert Timer.SILENCE not in m.timers and Timer.TOOL in m.timers
    assert not m.gated and not {"stop_capture", "finish_capture"} & set(names(actions))
    m, seen, _ = run(m, s.Timeout(Timer.SILENCE))  # on its way as it was cancelled
    assert seen == [State.THINKING] and m.session_open
    # The answer went out: the box waits for the reply as after a question, then speaks.
    m, seen, actions = run(m, ANSWERED)
    assert seen == [State.LISTENING]
    assert m.timers & {Timer.SILENCE, Timer.TOOL, Timer.REPLY} == {Timer.SILENCE}
    m, seen, _ = run(m, REPLY, DONE, s.PlaybackDrained())
    assert seen == [State.SPEAKING, State.SPEAKING, State.LISTENING]
    assert "play_earcon:error" not in names(actions)


def test_the_person_talking_while_the_tool_works_is_heard() -> None:
    """The microphone stays open, ungated; the service may answer the new words, or stop
    what it was doing for them."""
    m, _, _ = run(asked(), CALLED)
    m, seen, actions = run(m, s.SpeechHeard(True), s.SpeechHeard())
    assert seen == [State.THINKING] * 2 and not m.gated and m.session_open
    assert not {"stop_capture", "gate_microphone:True"} & set(names(actions))
    interrupted, seen, _ = run(m, s.Interrupted(session=1))
    assert seen == [State.LISTENING] and Timer.SILENCE in interrupted.timers
    _, seen, _ = run(m, REPLY)
    assert seen == [State.SPEAKING]


def test_a_person_talking_while_the_tool_works_starts_the_camera_a_text_turn_left_off() -> None:
    """A hook's text opens the conversation with the camera off; a person who speaks
    while the model's tool works is there to be seen, as when the box listens."""
    m, _, _ = run(Machine(mode=Mode.TOGGLE), s.TextTurn("what time is it?"), SETUP, CALLED)
    m, seen, actions = run(m, s.SpeechHeard(from_the_room=True))
    assert seen == [State.THINKING] and names(actions) == ["start_camera"]


def test_a_second_tool_call_before_the_first_answer_still_listens_after_both() -> None:
    m, _, _ = run(asked(), CALLED, s.ToolsAtWork(session=1, calls=2))
    m, seen, _ = run(m, CALLED, ANSWERED)
    assert seen == [State.THINKING, State.LISTENING]
    assert Timer.SILENCE in m.timers and Timer.REPLY not in m.timers


def test_a_tool_answer_that_never_goes_out_ends_in_the_error_then_listens() -> None:
    m, _, _ = run(asked(), CALLED)
    m, seen, actions = run(m, s.Timeout(Timer.TOOL))
    assert seen == [State.LISTENING] and "play_earcon:error" in names(actions)
    m, seen, _ = run(m, s.Timeout(Timer.SILENCE))
    assert seen == [State.IDLE] and not m.session_open


@pytest.mark.parametrize("answer_first", [True, False], ids=["answer-first", "reconnect-first"])
def test_a_reconnect_while_the_tool_works_listens_on_the_next_connection(
    answer_first: bool,
) -> None:
    """The call's task ends with the connection (ToolsAtWork with no call left), and the
    link reconnects: the box listens again on the next one."""
    gone = s.Reconnecting(session=1, reason="1011", reply_lost=False)
    order: list[s.Event] = [ANSWERED, gone] if answer_first else [gone, ANSWERED]
    m, seen, _ = run(asked(), CALLED, *order, s.Reconnected(session=1))
    assert seen[-2:] == [State.CONNECTING, State.LISTENING]
    assert Timer.SILENCE in m.timers and Timer.TOOL not in m.timers


def test_the_end_conversation_call_while_listening_still_waits_for_the_goodbye() -> None:
    """end_conversation is a tool call: its ToolsAtWork comes around the EndConversation."""
    m, seen, _ = run(asked(), CALLED, s.EndConversation(session=1), ANSWERED)
    assert seen[-1] is State.LISTENING and m.ending and Timer.REPLY in m.timers
    hung_up, seen, _ = run(m, s.Timeout(Timer.REPLY))  # no goodbye came
    assert seen == [State.IDLE] and not hung_up.session_open
    m, seen, _ = run(m, REPLY, DONE, s.PlaybackDrained())  # the goodbye, then hang up
    assert seen == [State.SPEAKING, State.SPEAKING, State.IDLE] and not m.session_open


def test_push_to_talk_a_tool_call_while_the_button_is_held_changes_nothing() -> None:
    m, _, _ = run(Machine(), s.Pressed(), SETUP)
    m2, seen, actions = run(m, CALLED)
    assert seen == [State.LISTENING] and actions == [] and m2 == m


class HandsFree(Turn):
    """A Turn in a hands-free conversation: no activity markers, the service hears."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.clock.machine = Machine(mode=Mode.TOGGLE)
        self.clock.feed(s.Pressed(), s.SetupComplete(session=SESSION))
        self.conn._turn.awaiting_reply = False  # the push-to-talk turn's, not this one's


async def test_hands_free_a_tool_slower_than_the_silence_timer_gets_its_answer_heard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through the real connection: "what time is it?", the model calls a tool taking
    40 s ([tools] timeout_s 60, end_after_silence_s 30). The box stayed listening and
    the silence timer ran on: it hung up mid-tool, and the answer was never heard."""
    monkeypatch.setitem(SECONDS, Timer.SILENCE, SILENCE_S)
    monkeypatch.setitem(SECONDS, Timer.TOOL, TOOL_TIMEOUT_S + SECONDS[Timer.REPLY])
    turn = HandsFree()
    async with asyncio.TaskGroup() as group:
        turn.conn._group = group
        turn.receive(content(input_transcription=types.Transcription(text="what time is it")))
        turn.clock.wait(1)
        await turn.call("t0")
        while_working = turn.clock.machine.state
        turn.clock.wait(40)  # the tool works
        await turn.answer("t0")
        turn.clock.wait(2)  # the model thinks over the tool's answer
        turn.receive(audio())
        turn.receive(content(turn_complete=True))
        turn.clock.feed(PlaybackDrained())
    assert turn.clock.machine.session_open, "the conversation ended while the tool worked"
    assert State.SPEAKING in turn.clock.states, "the answer was never heard"
    assert while_working is State.THINKING, "listening LEDs while the tool worked"
    assert turn.clock.states[-1] is State.LISTENING
    assert Earcon.ERROR not in turn.clock.earcons
