"""What a connection makes of the service's messages, on its own (no socket needed)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from typing import Any

import pytest
from fakes import FakeActions, Gate, gated_tools
from google import genai
from google.genai import types
from google.genai.live import AsyncSession
from helpers import until

from device.audio import pcm
from device.config import LiveConfig, ToolsConfig
from device.live.client import LONGEST_REPLY_S, ReplyTooLong, run_turn
from device.live.connection import (
    TOOL_CALLS_LIMIT,
    Connection,
    Hooks,
    _seconds,
)
from device.live.inbound import AudioOnly
from device.live.reply import RATE_CHANGES_LIMIT
from device.live.turn import TRANSCRIPT_LIMIT, WireTurn
from device.live.websocket import check_sdk_internals, sdk_internals_missing, websocket_of
from device.live.wire import MIC_MIME, REPLY_RATE
from device.outbox import Item, Outbox
from device.states import (
    ClearPlayback,
    Interrupted,
    Machine,
    Mode,
    PlayReply,
    Pressed,
    Released,
    ReplyAudio,
    State,
    TurnComplete,
    step,
)
from device.tools import BUSY_ANSWERS_LIMIT, ToolBox
from rig.server.voice import reply_audio, tone_frequency

SESSION = 7


class Seen:
    def __init__(self) -> None:
        self.events: list[Any] = []


def connection(
    seen: Seen, turn: WireTurn, session: Any = None, toolbox: ToolBox | None = None
) -> Connection:
    hooks = Hooks(SESSION, seen.events.append, lambda item, t: None, lambda h: None)
    stack = contextlib.AsyncExitStack()
    return Connection(session, stack, LiveConfig(), Outbox(5), hooks, turn, toolbox)


class Socket:
    """What a session writes to its WebSocket, kept."""

    transport = None

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, message: str) -> None:
        self.sent.append(message)

    async def ping(self) -> None: ...


def sdk_session() -> AsyncSession:
    client = genai.Client(api_key="test-key")
    return AsyncSession(api_client=client._api_client, websocket=Socket())


def content(**fields: Any) -> types.LiveServerMessage:
    return types.LiveServerMessage(server_content=types.LiveServerContent(**fields))


def audio(data: bytes) -> types.LiveServerMessage:
    blob = types.Blob(data=data, mime_type="audio/pcm;rate=24000")
    return content(model_turn=types.Content(parts=[types.Part(inline_data=blob)]))


def reply(pcm: bytes, talked_over: bool = False) -> ReplyAudio:
    return ReplyAudio(session=SESSION, pcm=pcm, talked_over=talked_over)


def replay(events: list[Any], machine: Machine) -> tuple[Machine, list[bytes], list[State]]:
    """The state machine fed what the connection reported: where it ends, what it played
    and the states it went through."""
    played, states = [], []
    for event in events:
        machine, actions = step(machine, event)
        played += [a.pcm for a in actions if isinstance(a, PlayReply)]
        states.append(machine.state)
    return machine, played, states


async def test_the_rest_of_a_reply_talked_over_is_reported_as_such_and_is_never_heard() -> None:
    """A press during a reply: until the service's interrupted/turnComplete for it
    arrive, what comes is the old reply's, not the answer to the new turn; the state
    machine, fed what the connection reports, plays none of it."""
    seen, turn = Seen(), WireTurn()
    conn = connection(seen, turn)
    conn._dispatch(audio(b"\x01\x00" * 100))
    assert seen.events == [reply(b"\x01\x00" * 100)] and turn.replying
    turn.sent("activity_start")  # the person presses and talks over it
    turn.sent("activity_end")  # ... and lets go before the service's answer comes
    conn._dispatch(audio(b"\x02\x00" * 100))
    conn._dispatch(content(interrupted=True))
    conn._dispatch(content(turn_complete=True))
    conn._dispatch(audio(b"\x03\x00" * 100))  # the answer to the new turn
    conn._dispatch(content(turn_complete=True))
    assert seen.events[1:] == [
        reply(b"\x02\x00" * 100, talked_over=True),
        TurnComplete(session=SESSION, talked_over=True),
        reply(b"\x03\x00" * 100),
        TurnComplete(session=SESSION),
    ]
    machine = Machine(state=State.THINKING, session_open=True, session=SESSION, connected=True)
    machine, played, _ = replay(seen.events[1:], machine)
    assert played == [b"\x03\x00" * 100], "only the answer to the new turn is heard"
    assert machine.state is State.SPEAKING and machine.reply_done


async def test_a_reply_to_words_said_after_a_whole_reply_replaces_its_rest_a_tools_does_not(
) -> None:
    """Hands-free, the service transcribes words said over a reply it had sent whole and
    answers them: that answer replaces what still plays. After a tool call the model
    goes on in a new turn with no new words: what it said first plays to its end."""
    seen, turn = Seen(), WireTurn()
    conn = connection(seen, turn)
    first, tool_answer, answer = b"\x01\x00" * 100, b"\x02\x00" * 100, b"\x03\x00" * 100
    conn._dispatch(content(input_transcription=types.Transcription(text="what time is it")))
    conn._dispatch(audio(first))  # "let me check"
    conn._dispatch(content(turn_complete=True))
    conn._dispatch(audio(tool_answer))  # after the tool's answer: "ten past three"
    conn._dispatch(content(turn_complete=True))
    conn._dispatch(content(input_transcription=types.Transcription(text="and tomorrow")))
    conn._dispatch(audio(answer))
    replies = [e for e in seen.events if isinstance(e, ReplyAudio)]
    assert [(r.pcm, r.replaces) for r in replies] == [
        (first, True), (tool_answer, False), (answer, True)]  # fmt: skip
    machine = Machine(mode=Mode.TOGGLE, state=State.LISTENING, session_open=True,
                      session=SESSION, connected=True)  # fmt: skip
    machine, played, _ = replay(seen.events, machine)
    assert played == [first, tool_answer, answer]
    _, actions = step(Machine(mode=Mode.TOGGLE, state=State.SPEAKING, session_open=True,
                              session=SESSION, reply_done=True), replies[1])  # fmt: skip
    assert not any(isinstance(a, ClearPlayback) for a in actions), "the tool's: queued"
    _, actions = step(Machine(mode=Mode.TOGGLE, state=State.SPEAKING, session_open=True,
                              session=SESSION, reply_done=True), replies[2])  # fmt: skip
    assert isinstance(actions[0], ClearPlayback), "the answer: the old rest goes"


async def test_a_second_press_while_the_box_thinks_supersedes_the_first_turns_reply() -> None:
    """Press, release, press and release again before any reply: the service ends the
    first turn (interrupted, turnComplete) and answers the second. The box thinks on
    until that answer; it never shows idle in between."""
    seen, turn = Seen(), WireTurn()
    conn = connection(seen, turn)
    turn.sent("activity_start")
    turn.sent("activity_end")
    turn.sent("activity_start")  # the second press, nothing of the first reply yet
    turn.sent("activity_end")
    conn._dispatch(content(interrupted=True))  # the first turn's
    conn._dispatch(content(turn_complete=True))
    conn._dispatch(audio(b"\x05\x00" * 100))  # the answer to the second turn
    conn._dispatch(content(turn_complete=True))
    machine = Machine(state=State.THINKING, session_open=True, session=SESSION, connected=True)
    machine, played, states = replay(seen.events, machine)
    assert played == [b"\x05\x00" * 100]
    assert states == [State.THINKING, State.SPEAKING, State.SPEAKING]  # never idle
    assert machine.reply_done


async def test_taps_in_a_row_before_any_reply_each_end_as_talked_over() -> None:
    """Three quick turns before any reply (a slow uplink, or taps with no gap): the
    service ends the first two (interrupted, turnComplete each) and answers the third.
    The box thinks on until that answer, which is heard whole and ends the turn."""
    seen, turn = Seen(), WireTurn()
    conn = connection(seen, turn)
    for _ in range(3):
        turn.sent("activity_start")
        turn.sent("activity_end")
    for _ in range(2):  # the first two turns' ends
        conn._dispatch(content(interrupted=True))
        conn._dispatch(content(turn_complete=True))
    assert not any(isinstance(e, Interrupted) for e in seen.events)
    assert turn.in_flight, "the third turn still awaits its reply"
    conn._dispatch(audio(b"\x05\x00" * 100))
    conn._dispatch(content(turn_complete=True))
    machine = Machine(state=State.THINKING, session_open=True, session=SESSION, connected=True)
    machine, played, states = replay(seen.events, machine)
    assert played == [b"\x05\x00" * 100]
    assert states[-2:] == [State.SPEAKING, State.SPEAKING] and State.IDLE not in states
    assert machine.reply_done and not turn.in_flight


async def test_a_second_press_after_a_turn_left_unanswered_hears_its_own_reply() -> None:
    """The first turn never ends (its tool call was withdrawn): the second turn's reply,
    when it comes, is heard whole and ends the turn."""
    seen, turn = Seen(), WireTurn()
    conn = connection(seen, turn)
    for kind in ("activity_start", "activity_end", "activity_start", "activity_end"):
        turn.sent(kind)  # type: ignore[arg-type]
    conn._dispatch(audio(b"\x06\x00" * 100))
    conn._dispatch(content(turn_complete=True))
    machine = Machine(state=State.THINKING, session_open=True, session=SESSION, connected=True)
    machine, played, _ = replay(seen.events, machine)
    assert played == [b"\x06\x00" * 100]
    assert machine.state is State.SPEAKING and machine.reply_done

async def test_audio_after_an_interruption_is_not_heard_nor_ends_the_next_reply() -> None:
    """interrupted, then a late piece of the reply cut short and its turnComplete: the
    piece is not played and that turnComplete is not the end of the next reply."""
    seen, turn = Seen(), WireTurn()
    conn = connection(seen, turn)
    conn._dispatch(audio(b"\x01\x00" * 100))
    conn._dispatch(content(interrupted=True))
    conn._dispatch(audio(b"\x02\x00" * 100))  # late, of the reply cut short
    conn._dispatch(content(turn_complete=True))
    conn._dispatch(audio(b"\x03\x00" * 100))  # the answer to what the person said
    machine = Machine(state=State.SPEAKING, session_open=True, session=SESSION, connected=True)
    machine, played, _ = replay(seen.events[1:], machine)
    assert played == [b"\x03\x00" * 100]
    assert machine.state is State.SPEAKING and not machine.reply_done


async def test_the_words_of_a_reply_talked_over_reach_the_journal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen, turn = Seen(), WireTurn()
    conn = connection(seen, turn)
    caplog.set_level(logging.INFO)
    conn._dispatch(audio(b"\x01\x00" * 100))
    turn.sent("activity_start")  # a press over the reply
    conn._dispatch(content(input_transcription=types.Transcription(text="what about rain")))
    conn._dispatch(content(output_transcription=types.Transcription(text="Tomorrow will")))
    conn._dispatch(content(interrupted=True))
    conn._dispatch(content(turn_complete=True))
    lines = [r.getMessage() for r in caplog.records]
    assert "user said: what about rain" in lines
    assert "model said (cut short): Tomorrow will" in lines

async def test_an_interruption_of_the_reply_the_person_is_hearing_is_reported() -> None:
    seen, turn = Seen(), WireTurn()
    conn = connection(seen, turn)
    conn._dispatch(audio(b"\x01\x00" * 10))
    conn._dispatch(content(interrupted=True))
    conn._dispatch(content(turn_complete=True))
    assert seen.events == [
        reply(b"\x01\x00" * 10),
        Interrupted(session=SESSION),
        TurnComplete(session=SESSION, talked_over=True),  # the end of the reply cut short
    ]
    assert not turn.in_flight


@pytest.mark.parametrize("after_a_whole_reply", [False, True], ids=["first", "after-whole"])
async def test_old_audio_arriving_while_the_new_press_is_held_does_not_steal_its_reply(
    after_a_whole_reply: bool,
) -> None:
    """Press, release; the box thinks. Press again (activityStart on the wire); before the
    service has read it, a chunk of the first turn's reply arrives while the button is
    still down (ignored: the person talks). The person lets go; then the service's
    interrupted/turnComplete for the first turn come, then the answer to the second.
    The box must play that answer and think on until it: never idle in between. Also
    after a turn before them ended whole (any conversation's second question on)."""
    seen, turn = Seen(), WireTurn()
    conn = connection(seen, turn)
    turn.sent("activity_start")
    if after_a_whole_reply:
        turn.sent("activity_end")
        conn._dispatch(audio(b"\x09\x00" * 100))  # turn 0's reply
        conn._dispatch(content(turn_complete=True))  # came whole
        seen.events.append(Pressed())
        turn.sent("activity_start")
        seen.events.append(Released())
    turn.sent("activity_end")  # turn 1 awaits its reply
    second_press = len(seen.events)
    seen.events.append(Pressed())
    turn.sent("activity_start")  # turn 2: the button is down
    conn._dispatch(audio(b"\x01\x00" * 100))  # turn 1's, sent before the service saw it
    seen.events.append(Released())
    turn.sent("activity_end")
    conn._dispatch(content(interrupted=True))  # turn 1's end
    conn._dispatch(content(turn_complete=True))
    conn._dispatch(audio(b"\x05\x00" * 100))  # the answer to turn 2
    conn._dispatch(content(turn_complete=True))
    machine = Machine(state=State.THINKING, session_open=True, session=SESSION, connected=True)
    machine, played, states = replay(seen.events, machine)
    assert played[-1:] == [b"\x05\x00" * 100] and b"\x01\x00" * 100 not in played, (
        f"turn 2's answer swallowed or turn 1's rest heard; states {states}"
    )
    assert State.IDLE not in states[second_press:], f"idle before the answer: {states}"


async def test_an_interrupted_after_the_reply_ended_does_not_swallow_the_next_reply() -> None:
    """Hands-free: the reply came whole (turnComplete), and plays from the speaker; then an
    `interrupted` comes with nothing left in flight (the person talked over the rest, or a
    stray one: googleapis/python-genai#2333 shows them right after a turnComplete). No
    turnComplete of its own follows: the answer to what the person said, when it comes, is
    a new reply and must be heard."""
    seen, turn = Seen(), WireTurn()
    conn = connection(seen, turn)
    conn._dispatch(audio(b"\x01\x00" * 100))
    conn._dispatch(content(turn_complete=True))  # the reply came whole
    conn._dispatch(content(interrupted=True))  # nothing in flight any more
    assert not turn.in_flight
    conn._dispatch(audio(b"\x07\x00" * 100))  # the next reply
    conn._dispatch(content(turn_complete=True))
    machine = Machine(mode=Mode.TOGGLE, state=State.LISTENING, session_open=True,
                      session=SESSION, connected=True)  # fmt: skip
    machine, played, _ = replay(seen.events, machine)
    assert b"\x07\x00" * 100 in played, "the next reply was swallowed as the old one's rest"


@pytest.mark.parametrize(
    ("stray", "before_the_press"),
    [(("interrupted",), True), (("interrupted", "turn_complete"), False),
     (("interrupted", "turn_complete"), True)],
    ids=["alone-before", "with-its-end-after", "with-its-end-before"],
)  # fmt: skip
async def test_a_stray_interrupted_after_a_whole_reply_ends_nothing_of_the_next_question(
    stray: tuple[str, ...], before_the_press: bool
) -> None:
    """Push-to-talk: a reply came whole, then an `interrupted` with nothing of it in flight
    (and the turnComplete that ends an interrupted turn, or not), before the next press or
    after it. The next question's answer is heard, the box thinking until it comes: it was
    swallowed whole (thinking until reply_timeout_s, then the error earcon), or the stray
    end turned the box idle before it."""
    seen, turn = Seen(), WireTurn()
    conn = connection(seen, turn)
    turn.sent("activity_start")
    turn.sent("activity_end")
    conn._dispatch(audio(b"\x01\x00" * 100))
    conn._dispatch(content(turn_complete=True))

    def stray_messages() -> None:
        for field in stray:
            conn._dispatch(content(**{field: True}))

    if before_the_press:
        stray_messages()
    seen.events.append(Pressed())  # the next question
    turn.sent("activity_start")
    seen.events.append(Released())
    turn.sent("activity_end")
    if not before_the_press:
        stray_messages()
    assert turn.in_flight, "the next question's reply is still awaited"
    conn._dispatch(audio(b"\x07\x00" * 100))  # its answer
    conn._dispatch(content(turn_complete=True))
    machine = Machine(state=State.THINKING, session_open=True, session=SESSION, connected=True)
    machine, played, states = replay(seen.events, machine)
    assert b"\x07\x00" * 100 in played, f"the answer was never heard; states {states}"
    assert State.IDLE not in states[: states.index(State.SPEAKING)], states


@pytest.mark.parametrize(
    ("stray", "while_held"),
    [(("interrupted",), True), (("interrupted",), False),
     (("interrupted", "turn_complete"), False)],
    ids=["alone-held", "alone-released", "with-its-end-released"],
)  # fmt: skip
async def test_a_press_just_before_the_replys_turn_complete_then_a_stray_interrupted(
    stray: tuple[str, ...], while_held: bool
) -> None:
    """Push-to-talk: the person presses as the reply's last audio arrives; the service's
    turnComplete for it (sent before it read the press) comes a few ms after. It had
    nothing left to interrupt; its late `interrupted` (as after any whole reply) must end
    nothing of the new question: its answer is heard, the box thinking until it comes.
    The same press a few ms later (after the turnComplete) is answered so already."""
    seen, turn = Seen(), WireTurn()
    conn = connection(seen, turn)
    turn.sent("activity_start")
    turn.sent("activity_end")
    conn._dispatch(audio(b"\x01\x00" * 100))
    seen.events.append(Pressed())
    turn.supersede()  # the press's SupersedeReply, then its activityStart goes out
    turn.sent("activity_start")
    conn._dispatch(content(turn_complete=True))  # the whole reply's end, already on its way

    def stray_messages() -> None:
        for field in stray:
            conn._dispatch(content(**{field: True}))

    if while_held:
        stray_messages()
    release = len(seen.events)
    seen.events.append(Released())
    turn.sent("activity_end")
    if not while_held:
        stray_messages()
    conn._dispatch(audio(b"\x07\x00" * 100))  # its answer
    conn._dispatch(content(turn_complete=True))
    machine = Machine(state=State.THINKING, session_open=True, session=SESSION, connected=True)
    machine, played, states = replay(seen.events, machine)
    assert b"\x07\x00" * 100 in played, f"the answer was never heard; states {states}"
    after = states[release:]
    assert State.IDLE not in after[: after.index(State.SPEAKING)], f"idle before it: {states}"


def reply_parts(*parts: types.Part) -> types.LiveServerMessage:
    return content(model_turn=types.Content(parts=list(parts)))


def pcm_part(data: bytes, mime_type: str) -> types.Part:
    return types.Part(inline_data=types.Blob(data=data, mime_type=mime_type))


def heard(seen: Seen) -> list[bytes]:
    """The reply audio the connection reported, event by event."""
    return [e.pcm for e in seen.events if isinstance(e, ReplyAudio)]


async def test_parts_split_inside_a_sample_play_as_the_samples_sent() -> None:
    seen, turn = Seen(), WireTurn()
    conn = connection(seen, turn)
    sent = reply_audio(1, 0.1)
    cuts = [0, 1, 4, 7, 1001, 1002, len(sent)]  # odd lengths, and a part of one byte
    for start, end in itertools.pairwise(cuts):
        conn._dispatch(reply_parts(pcm_part(sent[start:end], "audio/pcm;rate=24000")))
    conn._dispatch(content(turn_complete=True))
    assert b"".join(heard(seen)) == sent
    assert all(len(pcm) % 2 == 0 for pcm in heard(seen))


async def test_a_reply_at_another_rate_plays_at_its_pitch_and_length() -> None:
    seen, turn = Seen(), WireTurn()
    conn = connection(seen, turn)
    sent = reply_audio(1, 1.0, rate=16000)
    for start in range(0, len(sent), 3201):
        conn._dispatch(reply_parts(pcm_part(sent[start : start + 3201], "Audio/PCM; rate=16000")))
    conn._dispatch(content(turn_complete=True))
    played = b"".join(heard(seen))
    assert abs(len(played) / 2 - REPLY_RATE) < 48, "one second at 24 kHz, the resampler's tail in"
    assert abs(pcm.dominant_frequency(played, REPLY_RATE) - tone_frequency(1)) < 2
    assert seen.events[-1] == TurnComplete(session=SESSION)


async def test_a_reply_whose_rate_keeps_changing_plays_at_the_last_rate_allowed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A message of 2000 parts alternating 16 and 8 kHz built a resampler per part and
    held the loop 0.4 s (a 1 MiB message of them, seconds). After RATE_CHANGES_LIMIT
    changes, parts at another rate are not played; one journal line says so."""
    seen, turn = Seen(), WireTurn()
    conn = connection(seen, turn)
    tone = b"\x00\x10\x00\xf0" * 80  # 160 samples: 10 ms at 16 kHz, 20 ms at 8 kHz
    rates = itertools.islice(itertools.cycle((16000, 8000)), 2000)
    conn._dispatch(reply_parts(*(pcm_part(tone, f"audio/pcm;rate={r}") for r in rates)))
    conn._dispatch(content(turn_complete=True))
    played_s = len(b"".join(heard(seen))) / 2 / REPLY_RATE
    assert RATE_CHANGES_LIMIT == 4
    assert abs(played_s - (0.06 + 998 * 0.02)) < 0.05, played_s  # four parts, then 8 kHz's
    warned = [r for r in caplog.records if "changed a reply's rate" in r.getMessage()]
    assert len(warned) == 1


async def test_parts_that_are_not_audio_are_not_played() -> None:
    seen, turn = Seen(), WireTurn()
    conn = connection(seen, turn)
    conn._dispatch(
        reply_parts(
            types.Part(text="a note"),
            pcm_part(b"\x89PNG\r\n\x1a\n" * 8, "image/png"),
            pcm_part(b"\xff\xfb" * 64, "audio/mpeg"),
            pcm_part(b"\x01\x00" * 8, "audio/pcm;rate=oops"),
        )
    )
    assert seen.events == []
    conn._dispatch(reply_parts(types.Part(text="a note"), pcm_part(b"\x01\x00" * 8, "audio/pcm")))
    assert seen.events == [reply(b"\x01\x00" * 8)]


async def test_a_half_sample_of_an_interrupted_reply_does_not_shift_the_next() -> None:
    seen, turn = Seen(), WireTurn()
    conn = connection(seen, turn)
    conn._dispatch(reply_parts(pcm_part(b"\x01\x00\x01", "audio/pcm;rate=24000")))
    conn._dispatch(content(interrupted=True))
    conn._dispatch(content(turn_complete=True))
    conn._dispatch(reply_parts(pcm_part(b"\x03\x00" * 4, "audio/pcm;rate=24000")))
    assert heard(seen) == [b"\x01\x00", b"\x03\x00" * 4]


def test_the_installed_sdk_still_has_what_the_link_reaches_into() -> None:
    """Fails when google-genai or websockets move what `websocket_of` relies on."""
    missing = sdk_internals_missing()
    assert not missing, (
        "the installed SDK moved what device/live/connection.py reaches into: "
        + "; ".join(missing)
        + " (pings, aborts and buffer bounds now degrade: update websocket_of)"
    )


def test_an_sdk_that_moved_its_websocket_is_one_warning_and_the_link_works_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from google.genai import live

    class MovedSession(live.AsyncSession):  # a future SDK: the socket under another name
        def __init__(self, api_client: Any, websocket: Any, **kwargs: Any) -> None:
            super().__init__(api_client, websocket, **kwargs)
            self._socket = self.__dict__.pop("_ws")

    monkeypatch.setattr(live, "AsyncSession", MovedSession)
    check_sdk_internals()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "_ws" in warnings[0].getMessage()
    seen, turn = Seen(), WireTurn()
    conn = connection(seen, turn)
    conn.session = MovedSession(None, object())
    assert websocket_of(conn.session) is None
    conn.abort()  # no socket to reach: nothing to do, nothing raised


async def test_microphone_audio_goes_out_exactly_as_the_sdk_writes_it() -> None:
    """The device builds the chunk's message itself (the SDK's models cost more than the
    rest of sending it); on the wire it must be the SDK's, byte for byte."""
    pcm = bytes(range(256)) * 5  # every byte value: both base64 alphabets would show
    by_sdk, ours = sdk_session(), sdk_session()
    await by_sdk.send_realtime_input(audio=types.Blob(data=pcm, mime_type=MIC_MIME))
    await connection(Seen(), WireTurn(), ours)._send(Item("audio", pcm))
    assert ours._ws.sent == by_sdk._ws.sent


async def test_without_the_websocket_it_knows_the_device_sends_through_the_sdk() -> None:
    class Session:
        def __init__(self) -> None:
            self.sent: list[types.Blob] = []

        async def send_realtime_input(self, audio: types.Blob) -> None:
            self.sent.append(audio)

    session = Session()
    await connection(Seen(), WireTurn(), session)._send(Item("audio", b"\x01\x02"))
    assert session.sent == [types.Blob(data=b"\x01\x02", mime_type=MIC_MIME)]


# ---- what a service can send has a bound ------------------------------------------------


class ToolAnswers:
    """A session that keeps the tool responses the connection sends."""

    def __init__(self) -> None:
        self.sent: list[list[types.FunctionResponse]] = []

    async def send_tool_response(self, *, function_responses: list[types.FunctionResponse]) -> None:
        self.sent.append(function_responses)


def tool_call(prefix: str, count: int) -> types.LiveServerMessage:
    calls = [types.FunctionCall(id=f"{prefix}{i}", name="get_time") for i in range(count)]
    return types.LiveServerMessage(tool_call=types.LiveServerToolCall(function_calls=calls))


async def test_a_flood_of_tool_calls_runs_a_few_and_answers_the_rest_busy_in_one_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen, turn, session = Seen(), WireTurn(), ToolAnswers()
    conn = connection(seen, turn, session)
    async with asyncio.TaskGroup() as group:
        conn._group = group
        conn._dispatch(tool_call("a", 5000))
        conn._dispatch(tool_call("b", 5000))  # while the first ones still run
        started = [t for t in asyncio.all_tasks() if t.get_name().startswith("tool-")]
    assert len(started) == TOOL_CALLS_LIMIT + 1  # the calls it runs and one busy answer
    single = [answers for answers in session.sent if len(answers) == 1]
    (busy,) = [answers for answers in session.sent if len(answers) > 1]
    # The first of the rest, not all 4,984: a flood's answer is as small as a few calls'.
    refused = range(TOOL_CALLS_LIMIT, TOOL_CALLS_LIMIT + BUSY_ANSWERS_LIMIT)
    assert [a.id for a in busy] == [f"a{i}" for i in refused]
    assert all("busy" in a.response["error"] for a in busy)
    assert sorted(a.id for (a,) in single) == sorted(f"a{i}" for i in range(TOOL_CALLS_LIMIT))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings  # no tools here (once), and the flood (once)
    assert not turn.tools_running


async def test_a_turn_that_never_ends_keeps_a_bounded_transcript(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen, turn = Seen(), WireTurn()
    conn = connection(seen, turn)
    words = "and on " * 150  # 1050 characters a message
    caplog.set_level(logging.INFO)
    for _ in range(2000):  # two megabytes said, no turnComplete
        conn._dispatch(content(output_transcription=types.Transcription(text=words)))
    assert turn.said.kept == TRANSCRIPT_LIMIT
    conn._dispatch(content(turn_complete=True))
    (said,) = [r for r in caplog.records if r.getMessage().startswith("model said:")]
    assert len(said.getMessage()) < TRANSCRIPT_LIMIT + 100
    assert said.getMessage().endswith(f"({2000 * len(words) - TRANSCRIPT_LIMIT} characters more)")
    assert not turn.said


@pytest.mark.parametrize("time_left", ["1.2.3s", ".s", "s", "soon"])
def test_a_go_away_with_a_time_it_cannot_read_means_now(time_left: str) -> None:
    assert _seconds(time_left) == 0.0


@pytest.mark.parametrize(
    ("time_left", "said"), [("1e9s", "a moment"), ("soon", "a moment"), ("12.50s", "12.5 s")]
)
async def test_a_go_aways_line_says_the_time_left_as_the_box_read_it(
    time_left: str, said: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A time the box cannot read moves it at once; the line said "will close this
    connection in 1e9s", thirty years as an owner reads it, for a switch that came now."""
    caplog.set_level(logging.INFO)
    conn = connection(Seen(), WireTurn(), ToolAnswers())
    with pytest.raises(ExceptionGroup):
        async with asyncio.TaskGroup() as group:
            conn._group = group
            conn._plan_switch(time_left)
            raise RuntimeError("read: the switch itself is not this test's")
    lines = [r.getMessage() for r in caplog.records if "will close" in r.getMessage()]
    assert lines == [f"the service will close this connection in {said}"]


async def test_an_interrupted_after_a_tool_call_ends_that_turn_not_the_reply_before() -> None:
    """A reply came whole; the next generation began with a tool call (no audio yet), and
    the person talked over it: that interrupted and its turnComplete end that turn (a
    late word on the reply before would end nothing)."""
    seen, turn, session = Seen(), WireTurn(), ToolAnswers()
    conn = connection(seen, turn, session)
    async with asyncio.TaskGroup() as group:
        conn._group = group
        conn._dispatch(audio(b"\x01\x00" * 100))
        conn._dispatch(content(turn_complete=True))
        conn._dispatch(tool_call("t", 1))
        conn._dispatch(content(interrupted=True))
        conn._dispatch(content(turn_complete=True))
    ends = [e for e in seen.events if isinstance(e, Interrupted | TurnComplete)]
    cut_short = TurnComplete(session=SESSION, talked_over=True)
    assert ends[-2:] == [Interrupted(session=SESSION), cut_short]


class EndlessReply:
    """A service that streams reply audio as fast as it is read and never ends the turn."""

    def __init__(self) -> None:
        self.sent_s = 0.0

    async def send_client_content(self, **_: Any) -> None:
        pass

    async def receive(self) -> Any:
        ten_s = b"\x01\x00" * (REPLY_RATE * 10)
        part = types.Part(inline_data=types.Blob(data=ten_s, mime_type="audio/pcm;rate=24000"))
        message = types.LiveServerMessage(
            server_content=types.LiveServerContent(model_turn=types.Content(parts=[part]))
        )
        while True:
            self.sent_s += 10
            yield message
            await asyncio.sleep(0)


async def test_a_reply_that_never_ends_is_cut_at_the_longest_reply_for_ask_and_the_doctor() -> None:
    """`ask` and `doctor --turn` kept all of it until their timeout: 1.8 GB in 5 s here."""
    service = EndlessReply()
    async with asyncio.timeout(10):
        with pytest.raises(ReplyTooLong, match="300 s"):
            await run_turn(service, "hello")  # type: ignore[arg-type]
    assert service.sent_s <= LONGEST_REPLY_S + 10
    with pytest.raises(ReplyTooLong, match="20 s"):
        await run_turn(EndlessReply(), "hello", longest_s=20)  # type: ignore[arg-type]


class EndlessWords:
    """A service that streams the reply's transcription, a megabyte a message, then ends."""

    async def send_client_content(self, **_: Any) -> None:
        pass

    async def receive(self) -> Any:
        words = types.Transcription(text="word " * 200_000)
        for _ in range(50):
            yield types.LiveServerMessage(
                server_content=types.LiveServerContent(output_transcription=words)
            )
        yield content(turn_complete=True)


async def test_the_words_of_a_reply_for_ask_and_the_doctor_are_bounded_too() -> None:
    reply = await run_turn(EndlessWords(), "hello")  # type: ignore[arg-type]
    assert len(reply.text) < TRANSCRIPT_LIMIT + 100
    assert reply.text.endswith(f"({50 * 1_000_000 - TRANSCRIPT_LIMIT} characters more)")


class Service:
    """One connection of the service, in-process: what the box sends is kept, what the
    test puts in `inbox` is what the service says."""

    session_id = "s"

    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []
        self.inbox: asyncio.Queue[types.LiveServerMessage] = asyncio.Queue()

    async def send_realtime_input(self, **message: object) -> None:
        self.sent.append(message)

    async def receive(self) -> Any:
        while True:
            yield await self.inbox.get()

    async def close(self) -> None: ...


async def test_hands_free_a_go_away_does_not_switch_while_the_persons_words_are_unanswered(
) -> None:
    """A goAway (50 s left) a moment after the person asked something hands-free: their
    words went out after the last resumption handle, so no handle holds them. Counted
    quiet (no activity hands-free, no reply begun), the box switched at once: the new
    connection never answered the question."""
    service, outbox, turn = Service(), Outbox(8), WireTurn()
    hooks = Hooks(1, lambda e: None, lambda i, t: None, lambda h: None)
    conn = Connection(service, contextlib.AsyncExitStack(), LiveConfig(), outbox, hooks, turn)  # type: ignore[arg-type]
    running = asyncio.create_task(conn.run())
    update = types.LiveServerSessionResumptionUpdate(new_handle="h1", resumable=True)
    service.inbox.put_nowait(types.LiveServerMessage(session_resumption_update=update))
    await asyncio.sleep(0.05)
    for _ in range(25):  # "what's the weather tomorrow", hands-free: no activity markers
        outbox.put("audio", b"\x10\x27" * 640)
    outbox.put("audio_stream_end")  # then a second of silence: the quiet gate holds it
    await until(lambda: not outbox)
    assert len(service.sent) == 26, "the question went out on this connection"
    go_away = types.LiveServerGoAway(time_left="50s")
    service.inbox.put_nowait(types.LiveServerMessage(go_away=go_away))
    await asyncio.wait({running}, timeout=0.5)
    switched = running.done()
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    assert not switched, "switched at once, the question unanswered and in no handle"


def _stray_after_a_whole_reply_then_a_question(
    conn: Connection, seen: Seen, turn: WireTurn
) -> None:
    """A reply that came whole, the service's late `interrupted` alone after it (the case
    stray_end_due allows for), then a push-to-talk question."""
    turn.sent("activity_start")
    turn.sent("activity_end")
    conn._dispatch(audio(b"\x09\x00" * 100))
    conn._dispatch(content(turn_complete=True))  # whole
    conn._dispatch(content(interrupted=True))  # stray, alone
    seen.events.append(Pressed())
    turn.sent("activity_start")
    seen.events.append(Released())
    turn.sent("activity_end")


async def test_a_stray_interrupted_alone_then_a_quick_second_press_swallows_its_answer() -> None:
    """A reply came whole; the service's late `interrupted` comes alone (no turnComplete
    after it, the case stray_end_due allows for). The person asks, then presses again
    before any answer: the first question's interrupted/turnComplete come, then the
    second question's answer, which must be heard."""
    seen, turn = Seen(), WireTurn()
    conn = connection(seen, turn)
    _stray_after_a_whole_reply_then_a_question(conn, seen, turn)  # question 1
    seen.events.append(Pressed())
    turn.sent("activity_start")  # question 2, before any answer
    seen.events.append(Released())
    turn.sent("activity_end")
    conn._dispatch(content(interrupted=True))  # question 1's generation cut
    conn._dispatch(content(turn_complete=True))
    conn._dispatch(audio(b"\x05\x00" * 100))  # question 2's answer
    conn._dispatch(content(turn_complete=True))
    machine = Machine(state=State.SPEAKING, session_open=True, session=SESSION, connected=True)
    machine, played, states = replay(seen.events, machine)
    assert b"\x05\x00" * 100 in played, f"question 2's answer swallowed; states {states}"


# ---- tool calls meeting cancellations, and calls the box cannot answer ------------------


def with_tools(gate: Gate, *enabled: str) -> tuple[Connection, Socket, WireTurn]:
    """A connection over a real SDK session (Gemini API) whose socket keeps what is sent,
    its calls answered by the gated tools `enabled`."""
    session, turn = sdk_session(), WireTurn()
    toolbox = ToolBox(ToolsConfig(enabled=enabled), FakeActions(), registry=gated_tools(gate))
    return connection(Seen(), turn, session, toolbox), session._ws, turn


def answered(socket: Socket) -> list[dict[str, Any]]:
    """The function responses the SDK wrote, in order."""
    return [
        response
        for message in map(json.loads, socket.sent) if "tool_response" in message
        for response in message["tool_response"]["functionResponses"]
    ]


def calls(*pairs: tuple[str | None, str]) -> types.LiveServerMessage:
    made = [types.FunctionCall(id=i, name=name, args={}) for i, name in pairs]
    return types.LiveServerMessage(tool_call=types.LiveServerToolCall(function_calls=made))


def cancellation(*ids: str) -> types.LiveServerMessage:
    return types.LiveServerMessage(
        tool_call_cancellation=types.LiveServerToolCallCancellation(ids=list(ids))
    )


async def test_a_cancelled_id_the_service_used_twice_gets_no_stale_answer(gate: Gate) -> None:
    """Two calls under one id, both still running, then the service withdraws that id:
    neither may be answered (the service no longer waits for it; an answer to an id it
    does not know is refused). Only the newer one was withdrawn, the older answered."""
    conn, socket, turn = with_tools(gate, "slow")
    async with asyncio.TaskGroup() as group:
        conn._group = group
        conn._dispatch(calls(("x", "slow")))
        conn._dispatch(calls(("x", "slow")))
        await gate.entered(2)
        conn._dispatch(cancellation("x"))
        gate.opened.set()
    assert answered(socket) == [], "a withdrawn call was answered"
    assert not turn.tools_running


async def test_a_call_ending_does_not_shield_a_later_one_with_its_id_from_cancellation(
    gate: Gate,
) -> None:
    """The first call under an id answered quickly; its end forgot the second, still
    running under the same id, so the service's cancellation of it was not honoured."""
    conn, socket, _ = with_tools(gate, "slow", "quick")
    async with asyncio.TaskGroup() as group:
        conn._group = group
        conn._dispatch(calls(("x", "slow")))
        await gate.entered()
        conn._dispatch(calls(("x", "quick")))
        await until(lambda: len(answered(socket)) == 1)
        conn._dispatch(cancellation("x"))
        gate.opened.set()
    assert [a["name"] for a in answered(socket)] == ["quick"], "the withdrawn call answered"


async def test_a_call_without_an_id_does_not_end_the_connection(
    gate: Gate, caplog: pytest.LogCaptureFixture,
) -> None:
    """The SDK refuses to send a Gemini API function response without an id (ValueError):
    the connection's task group failed with it, the connection ended, and the person's
    reply with it (a reconnect, the error beep). The call is dropped with a journal line."""
    conn, socket, turn = with_tools(gate, "quick")
    async with asyncio.TaskGroup() as group:
        conn._group = group
        conn._dispatch(calls((None, "quick"), ("y", "quick")))
    assert [a["id"] for a in answered(socket)] == ["y"]
    assert not turn.tools_running
    assert any("without an id" in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING)


async def test_a_call_that_crosses_a_press_on_the_wire_is_left_unanswered(
    gate: Gate, caplog: pytest.LogCaptureFixture,
) -> None:
    """Push-to-talk: the service calls a quick tool for the last turn as the person presses
    again. The call was on its way before the service read the press; it withdraws it
    when it does, and the box's answer, a millisecond later, went to an id it no longer
    knew (a 1007 that ends the session). While the button is held no call can be the new
    turn's."""
    caplog.set_level(logging.INFO)
    conn, socket, turn = with_tools(gate, "quick")
    turn.sent("activity_start")
    turn.sent("activity_end")
    turn.sent("activity_start")  # the press, out before the call below arrived
    async with asyncio.TaskGroup() as group:
        conn._group = group
        conn._dispatch(calls(("x", "quick")))
    assert answered(socket) == []
    assert not turn.tools_running
    turn.sent("activity_end")
    async with asyncio.TaskGroup() as group:
        conn._group = group
        conn._dispatch(calls(("y", "quick")))  # the new turn's own call
    assert [a["id"] for a in answered(socket)] == ["y"]


def alone(pcm: bytes) -> AudioOnly:
    """A message of reply audio alone, as the link reads it off the socket."""
    return AudioOnly(parts=[(pcm, "audio/pcm;rate=24000")])


class FullSpeaker:
    """A speaker with seconds of the old reply still to play: no room."""

    def has_room(self) -> bool:
        return False

    async def wait_for_room(self) -> None:
        await asyncio.Event().wait()


async def test_words_over_a_whole_reply_its_answer_plays_from_its_first_chunk_at_once() -> None:
    """The same through the connection and the state machine: what the speaker is given
    is the answer from its first chunk, in place of the old reply's rest."""
    seen, turn = Seen(), WireTurn()
    hooks = Hooks(SESSION, seen.events.append, lambda item, t: None, lambda h: None,
                  FullSpeaker())  # fmt: skip
    conn = Connection(None, contextlib.AsyncExitStack(), LiveConfig(), Outbox(5), hooks, turn)
    old, rest = b"\x01\x00" * 100, b"\x02\x00" * 100
    first, more = b"\x03\x00" * 100, b"\x04\x00" * 100
    conn._handle(alone(old), False)  # handed on, playing: the speaker is full from here on
    for message in (alone(rest), content(turn_complete=True), alone(first),
                    content(input_transcription=types.Transcription(text="and Sunday?")),
                    alone(more)):  # fmt: skip
        await conn._read_ahead.take(message)
    machine = Machine(mode=Mode.TOGGLE, state=State.LISTENING, session_open=True,
                      session=SESSION, connected=True)  # fmt: skip
    _, played, _ = replay(seen.events, machine)
    assert played == [old, first, more]
    replies = [e for e in seen.events if isinstance(e, ReplyAudio)]
    assert [r.replaces for r in replies] == [False, True, False], "the answer clears the old"


async def test_a_question_the_service_ends_unanswered_after_a_stray_interrupted() -> None:
    """Push-to-talk: a reply came whole, then a stray `interrupted` alone. The person asks;
    the service cuts its answer before its first word and ends the turn (interrupted with
    turnComplete) and says nothing more. The box must leave thinking: taken for the stray
    one said again, that end left it thinking until reply_timeout_s."""
    seen, turn = Seen(), WireTurn()
    conn = connection(seen, turn)
    _stray_after_a_whole_reply_then_a_question(conn, seen, turn)
    conn._dispatch(content(interrupted=True, turn_complete=True))  # its answer cut, ended
    machine = Machine(state=State.SPEAKING, session_open=True, session=SESSION, connected=True)
    machine, _, states = replay(seen.events, machine)
    assert not turn.in_flight, "the question still awaits a reply that will not come"
    assert machine.state is not State.THINKING, f"left thinking; states {states}"
