"""The reply timer around the model's tool calls: what the connection reports while a
tool works, fed to the state machine on a clock the test moves (a 20 s tool in
milliseconds)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from google.genai import types
from helpers import until
from test_states import DONE, REPLY, SETUP, names, run

from device import config
from device import states as s
from device.config import LiveConfig
from device.live.connection import Connection, Hooks
from device.live.turn import WireTurn
from device.outbox import Outbox
from device.states import (
    Action,
    CancelTimer,
    Earcon,
    EndConversation,
    Event,
    Interrupted,
    Machine,
    Mode,
    PlaybackDrained,
    PlayEarcon,
    Pressed,
    Released,
    ReplyAudio,
    SetupComplete,
    SpeechHeard,
    StartTimer,
    State,
    Timeout,
    Timer,
    ToolsAtWork,
    TurnComplete,
    step,
)

SESSION = 1
REPLY_TIMEOUT_S = 30.0  # the default [conversation] reply_timeout_s
TOOL_TIMEOUT_S = 5.0  # the default [tools] timeout_s
SECONDS = {
    Timer.REPLY: REPLY_TIMEOUT_S,
    Timer.LONG_REPLY: 300.0,
    Timer.IDLE: 60.0,
    Timer.TOOL: TOOL_TIMEOUT_S + REPLY_TIMEOUT_S,  # as the appliance arms it
}


class Clock:
    """The state machine with its timers on a clock the test moves: what a person at the
    box would hear (earcons) and see (states) over a turn."""

    def __init__(
        self, machine: Machine | None = None, seconds: dict[Timer, float] | None = None
    ) -> None:
        self.machine, self.now = machine or Machine(), 0.0
        self.seconds = SECONDS if seconds is None else seconds
        self.due: dict[Timer, float] = {}
        self.states: list[State] = []
        self.earcons: list[Earcon] = []

    def feed(self, *events: Event) -> None:
        for event in events:
            self.machine, actions = step(self.machine, event)
            self.states.append(self.machine.state)
            self._perform(actions)

    def _perform(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case StartTimer(timer):
                    self.due[timer] = self.now + self.seconds.get(timer, 3600.0)
                case CancelTimer(timer):
                    self.due.pop(timer, None)
                case PlayEarcon(earcon):
                    self.earcons.append(earcon)

    def wait(self, seconds: float) -> None:
        """Time passes: the timers due in it run out, in order."""
        end = self.now + seconds
        while self.due and min(self.due.values()) <= end:
            timer = min(self.due, key=lambda t: self.due[t])
            self.now = self.due.pop(timer)
            self.feed(Timeout(timer))
        self.now = end


class SlowTools:
    """A tool box whose calls take as long as the test says (it opens each gate): 20 s on
    the test's clock, below a [tools] timeout_s now allowed at or above reply_timeout_s."""

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}

    async def run(self, call: types.FunctionCall) -> types.FunctionResponse:
        gate = self.gates.setdefault(call.id or "", asyncio.Event())
        await gate.wait()
        return types.FunctionResponse(id=call.id, name=call.name, response={"ok": True})


class ToolAnswers:
    """A session that keeps the tool responses the connection sends."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_tool_response(self, *, function_responses: list[types.FunctionResponse]) -> None:
        self.sent += [response.id or "" for response in function_responses]


def content(**fields: Any) -> types.LiveServerMessage:
    return types.LiveServerMessage(server_content=types.LiveServerContent(**fields))


def audio(data: bytes = b"\x01\x00" * 100) -> types.LiveServerMessage:
    blob = types.Blob(data=data, mime_type="audio/pcm;rate=24000")
    return content(model_turn=types.Content(parts=[types.Part(inline_data=blob)]))


def tool_call(call_id: str) -> types.LiveServerMessage:
    call = types.FunctionCall(id=call_id, name="slow")
    return types.LiveServerMessage(tool_call=types.LiveServerToolCall(function_calls=[call]))


class Turn:
    """A push-to-talk turn: the real connection's reports handed to the clocked machine
    as they come."""

    def __init__(self) -> None:
        self.clock, self.tools, self.session = Clock(), SlowTools(), ToolAnswers()
        self._events: list[Event] = []
        hooks = Hooks(SESSION, self._events.append, lambda item, t: None, lambda h: None)
        stack = contextlib.AsyncExitStack()
        self.conn = Connection(
            self.session,  # type: ignore[arg-type]
            stack,
            LiveConfig(),
            Outbox(5),
            hooks,
            WireTurn(),
            self.tools,  # type: ignore[arg-type]
        )
        self.clock.feed(Pressed(), SetupComplete(session=SESSION), Released())
        self.conn._turn.sent("activity_start")
        self.conn._turn.sent("activity_end")

    def hand_on(self) -> None:
        events, self._events[:] = list(self._events), []
        self.clock.feed(*events)

    def receive(self, message: types.LiveServerMessage) -> None:
        self.conn._dispatch(message)
        self.hand_on()

    async def call(self, call_id: str) -> None:
        self.receive(tool_call(call_id))
        await asyncio.sleep(0)  # the tool starts
        self.hand_on()

    async def answer(self, call_id: str) -> None:
        self.tools.gates.setdefault(call_id, asyncio.Event()).set()
        await until(lambda: call_id in self.session.sent)
        self.hand_on()


@pytest.mark.parametrize("words_first", [False, True], ids=["no-words", "let-me-look-first"])
@pytest.mark.parametrize("calls", [1, 2], ids=["one-tool", "a-second-tool-follows"])
async def test_the_model_has_a_whole_reply_timeout_after_a_slow_tools_answer(
    words_first: bool, calls: int
) -> None:
    """reply_timeout_s 30; a tool (below [tools] timeout_s) takes 20 s; the model begins
    its answer 15 s after the tool's. The reply timer, started at the release (or at the
    last word before the call) and left running through the tool, gave the model only
    the 10 s left: the error earcon, the turn given up, then the answer played anyway."""
    turn = Turn()
    async with asyncio.TaskGroup() as group:
        turn.conn._group = group
        if words_first:
            turn.receive(audio())  # "let me look that up"
        for call in range(calls):
            turn.clock.wait(2)
            await turn.call(f"t{call}")
            turn.clock.wait(20)  # the tool works
            await turn.answer(f"t{call}")
            turn.clock.wait(REPLY_TIMEOUT_S / 2)  # the model thinks over the tool's answer
        turn.receive(audio())
        turn.receive(content(turn_complete=True))
        turn.clock.feed(PlaybackDrained())
    assert turn.clock.earcons == [Earcon.LISTEN_START, Earcon.LISTEN_END], "an error earcon"
    assert turn.clock.states[-1] is State.IDLE
    assert State.IDLE not in turn.clock.states[3:-1], "the turn was given up before its reply"


async def test_the_box_thinks_while_a_tool_works_after_the_models_first_words() -> None:
    """The Live API's order around a tool: audio ("let me look"), toolCall, turnComplete,
    then, after the tool's answer, the rest. Once the first words had played the turn was
    over: idle LEDs (and the idle timer running) for as long as the tool worked, then the
    answer out of an idle box."""
    turn = Turn()
    async with asyncio.TaskGroup() as group:
        turn.conn._group = group
        turn.receive(audio())
        await turn.call("t0")
        turn.receive(content(turn_complete=True))
        turn.clock.feed(PlaybackDrained())
        assert turn.clock.machine.state is State.THINKING
        turn.clock.wait(REPLY_TIMEOUT_S)  # the tool works as long as a reply may wait
        assert turn.clock.machine.state is State.THINKING
        await turn.answer("t0")
        turn.clock.wait(REPLY_TIMEOUT_S / 2)
        turn.receive(audio())
        turn.receive(content(turn_complete=True))
        turn.clock.feed(PlaybackDrained())
    assert turn.clock.earcons == [Earcon.LISTEN_START, Earcon.LISTEN_END]
    assert turn.clock.states[-1] is State.IDLE
    assert State.IDLE not in turn.clock.states[3:-1], "idle while the tool worked"


async def test_a_tool_call_withdrawn_leaves_the_reply_timer_to_end_a_turn_nobody_answers() -> None:
    """The reply timer waits while a tool works; a call the service withdraws is no
    longer at work, and a turn with no reply after it still ends with the error."""
    turn = Turn()
    async with asyncio.TaskGroup() as group:
        turn.conn._group = group
        await turn.call("t0")
        turn.receive(
            types.LiveServerMessage(
                tool_call_cancellation=types.LiveServerToolCallCancellation(ids=["t0"])
            )
        )
        await asyncio.sleep(0)  # the call's task ends
        turn.hand_on()
    assert turn.session.sent == []
    turn.clock.wait(REPLY_TIMEOUT_S)
    assert turn.clock.machine.state is State.IDLE
    assert turn.clock.earcons[-1] is Earcon.ERROR


def test_a_tool_answer_that_never_goes_out_still_ends_the_turn() -> None:
    """The reply timer waits for a tool; the tool's own timer bounds that wait ([tools]
    timeout_s, then reply_timeout_s for its answer to go out): never left thinking."""
    clock = Clock()
    clock.feed(Pressed(), SetupComplete(session=SESSION), Released())
    clock.feed(ToolsAtWork(session=SESSION, calls=1))
    clock.wait(REPLY_TIMEOUT_S)
    assert clock.machine.state is State.THINKING
    clock.wait(TOOL_TIMEOUT_S)
    assert clock.machine.state is State.IDLE and clock.earcons[-1] is Earcon.ERROR


def test_a_tool_slower_than_the_reply_timeout_is_a_setting_that_loads(tmp_path: Path) -> None:
    """`[tools] timeout_s` at or above `reply_timeout_s` was refused: the reply timer ran
    on through the tool. It counts from the tool's answer now."""
    path = tmp_path / "config.toml"
    path.write_text("[tools]\nenabled = ['get_time']\ntimeout_s = 60\n")
    assert config.load(path).tools.timeout_s == 60


SILENCE_S = 30.0  # the default [conversation] end_after_silence_s
SLOW_TOOL_S = 60.0  # a [tools] timeout_s above it, now allowed
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
    link reconnects, the reply owed to the tool's answer lost with it: the error earcon
    says so (the box went back to listening without a sound), and the box listens again
    on the next connection."""
    gone = s.Reconnecting(session=1, reason="1011", reply_lost=True)
    order: list[s.Event] = [ANSWERED, gone] if answer_first else [gone, ANSWERED]
    m, seen, actions = run(asked(), CALLED, *order, s.Reconnected(session=1))
    assert seen[-2:] == [State.CONNECTING, State.LISTENING]
    assert names(actions).count("play_earcon:error") == 1
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
    monkeypatch.setitem(SECONDS, Timer.TOOL, SLOW_TOOL_S + SECONDS[Timer.REPLY])
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


#: The defaults' timers, with a slow tool's: [conversation] end_after_silence_s,
#: reply_timeout_s, longest_conversation_s, longest_reply_s.
DEFAULTS = {
    Timer.SILENCE: SILENCE_S,
    Timer.REPLY: REPLY_TIMEOUT_S,
    Timer.OPEN_MIC: 900.0,
    Timer.LONG_REPLY: 300.0,
    Timer.TOOL: SLOW_TOOL_S + REPLY_TIMEOUT_S,
}


def test_hands_free_a_slow_tool_is_not_cut_off_by_the_silence_after_the_question() -> None:
    """Hands-free, the person asks, the model calls a tool at once (no words first) and the
    tool takes 40 s, within a [tools] timeout_s of 60 that loads now. The box shows
    "listening" meanwhile and end_after_silence_s (30 s, from the question's last word)
    runs through the tool: the conversation hangs up before the answer can come."""
    clock = Clock(Machine(mode=Mode.TOGGLE), DEFAULTS)
    clock.feed(Pressed(), SetupComplete(session=SESSION), SpeechHeard(from_the_room=True))
    clock.wait(1)
    clock.feed(ToolsAtWork(session=SESSION, calls=1))
    clock.wait(39)  # the tool works
    assert clock.machine.session_open, "hung up while the tool worked"


def words() -> ReplyAudio:
    return ReplyAudio(session=SESSION, pcm=b"\x01\x00" * 100)


def test_hands_free_talking_over_a_tools_wait_brings_no_error_beep() -> None:
    """Hands-free: "let me look that up", a tool call, the turn's end, played out: the box
    waits for the tool. The person speaks again (a new question, 35 s of it); the service
    withdraws the call (toolCallCancellation: the connection reports no tool at work) and
    will answer when they stop. The reply timer, started by the withdrawal, ran out while
    they talked: the error earcon over their words, the LEDs "thinking" all along. Before
    95160c9 the drain left the box listening, its silence timer fed by their words."""
    clock = Clock(Machine(mode=Mode.TOGGLE), DEFAULTS)
    clock.feed(Pressed(), SetupComplete(session=SESSION), SpeechHeard(from_the_room=True))
    clock.feed(words(), ToolsAtWork(session=SESSION, calls=1), TurnComplete(session=SESSION))
    clock.feed(PlaybackDrained())
    clock.feed(SpeechHeard(from_the_room=True), ToolsAtWork(session=SESSION, calls=0))
    for _ in range(35):  # they talk on
        clock.wait(1)
        clock.feed(SpeechHeard(from_the_room=True))
    assert Earcon.ERROR not in clock.earcons, "the error earcon while the person talked"
    clock.feed(words(), TurnComplete(session=SESSION), PlaybackDrained())
    assert clock.machine.state is State.LISTENING


def test_push_to_talk_a_press_over_a_tools_wait_starts_a_turn_of_its_own() -> None:
    """Refutes a worry: the tool of the reply a press superseded reports its answer after
    the new question was asked; the new turn keeps its own reply timer, and ends quietly."""
    clock = Clock(Machine(), DEFAULTS)
    clock.feed(Pressed(), SetupComplete(session=SESSION), Released())
    clock.feed(ToolsAtWork(session=SESSION, calls=1))
    clock.wait(10)
    clock.feed(Pressed(), Released())  # a new question over the tool's wait
    clock.feed(ToolsAtWork(session=SESSION, calls=0))  # the old tool's answer goes out
    assert Timer.TOOL not in clock.machine.timers
    clock.wait(REPLY_TIMEOUT_S - 1)
    clock.feed(words(), TurnComplete(session=SESSION), PlaybackDrained())
    assert clock.machine.state is State.IDLE
    assert Earcon.ERROR not in clock.earcons


def test_hands_free_a_superseded_sessions_tool_does_not_touch_the_next() -> None:
    """Refutes a worry: a press hangs up while a tool works; the next press opens session 2,
    and session 1's tool ending (its task cancelled with the connection) changes nothing."""
    clock = Clock(Machine(mode=Mode.TOGGLE), DEFAULTS)
    clock.feed(Pressed(), SetupComplete(session=1), SpeechHeard(from_the_room=True))
    clock.feed(words(), ToolsAtWork(session=1, calls=1))
    clock.feed(Pressed(), Pressed(), SetupComplete(session=2))  # hang up, start again
    clock.feed(ToolsAtWork(session=1, calls=0), ToolsAtWork(session=1, calls=1))
    assert clock.machine.state is State.LISTENING and Timer.TOOL not in clock.machine.timers


def test_push_to_talk_the_goodbye_tool_hangs_up_after_the_goodbye_without_an_error() -> None:
    """Refutes a worry: "goodbye", the end_conversation call (answered at once), the turn's
    end: the box hangs up when the goodbye has played, with the falling earcon only."""
    clock = Clock(Machine(), DEFAULTS)
    clock.feed(Pressed(), SetupComplete(session=SESSION), Released())
    clock.feed(words(), ToolsAtWork(session=SESSION, calls=1), EndConversation(session=SESSION))
    clock.feed(ToolsAtWork(session=SESSION, calls=0), TurnComplete(session=SESSION))
    clock.feed(PlaybackDrained())
    assert not clock.machine.session_open and clock.machine.state is State.IDLE
    assert clock.earcons == [Earcon.LISTEN_START, Earcon.LISTEN_END, Earcon.LISTEN_END]


def test_barge_in_over_a_tools_wait_with_interrupted_ends_the_turn_quietly() -> None:
    """Refutes a worry: the service interrupts and withdraws the call (either order)."""
    for order in ((True, False), (False, True)):
        clock = Clock(Machine(mode=Mode.TOGGLE), DEFAULTS)
        clock.feed(Pressed(), SetupComplete(session=SESSION), SpeechHeard(from_the_room=True))
        clock.feed(words(), ToolsAtWork(session=SESSION, calls=1))
        for interrupted_first in order:
            if interrupted_first:
                clock.feed(Interrupted(session=SESSION))
            else:
                clock.feed(ToolsAtWork(session=SESSION, calls=0))
        assert clock.machine.state is State.LISTENING
        assert Timer.TOOL not in clock.machine.timers and Timer.REPLY not in clock.machine.timers
        assert Earcon.ERROR not in clock.earcons
