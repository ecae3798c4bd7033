"""Hands-free, a connection lost or replaced mid-conversation: through the local server
(its own voice activity detection ends the person's turn) and the real google-genai
SDK, the link's events fed to the real state machine. What the person hears (earcons)
and sees (states) when the answer owed to them goes with the connection."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fakes import FakeActions, Gate, gated_tools
from google.genai import types
from helpers import trusted_server, until
from test_go_away import heard_ms
from test_live_session import Speaker
from test_replies_after_tools import HandsFree, audio, content
from wire import config_for

from device.config import ToolsConfig
from device.live.connection import SwitchNow
from device.live.session import LiveLink
from device.outbox import Outbox
from device.states import (
    Earcon,
    Event,
    Machine,
    Mode,
    PlaybackDrained,
    PlayEarcon,
    Pressed,
    Reconnected,
    Reconnecting,
    Released,
    ReplyAudio,
    SetupComplete,
    SpeechHeard,
    State,
    TextTurn,
    Timer,
    ToolsAtWork,
    TurnComplete,
    step,
)
from device.tools import ToolBox
from rig.server.server import LiveServer

SPEECH = bytes(range(256)) * 5  # 40 ms of loud noise: speech to the server's detector
ROOM = b"\x01\x00" * 640  # 40 ms of a quiet room: no speech to it
CHUNK_S = 0.04  # the length of one of them
#: What the service may hear off a question's length: under half a chunk, so that a chunk
#: lost or sent twice across a drop shows (100 ms hid two of them).
WITHIN_MS = CHUNK_S * 1000 / 2


@dataclass
class Conversation:
    """A hands-free conversation: the link to the local server, its events fed to the
    state machine as the appliance feeds them, and what the person heard of them."""

    link: LiveLink
    outbox: Outbox
    machine: Machine = field(default_factory=lambda: Machine(mode=Mode.TOGGLE))
    events: list[Event] = field(default_factory=list)
    states: list[State] = field(default_factory=list)
    earcons: list[Earcon] = field(default_factory=list)

    def feed(self, event: Event) -> None:
        self.events.append(event)
        self.machine, actions = step(self.machine, event)
        self.states.append(self.machine.state)
        self.earcons += [a.earcon for a in actions if isinstance(a, PlayEarcon)]

    def say(self, chunks: int = 25) -> None:
        """A second of speech, then the pause after it (the microphone feed's
        audioStreamEnd): the service hears the person has finished."""
        for _ in range(chunks):
            self.outbox.put("audio", SPEECH)
        self.outbox.put("audio_stream_end")


@contextlib.asynccontextmanager
async def conversation(
    server: LiveServer, gate: Gate, speaker: Speaker | None = None, **sections: Any
) -> AsyncIterator[Conversation]:
    """A hands-free conversation opened by the wake button, the box's tools answering with
    the `slow` one (held by `gate`); the reply audio to `speaker`, which the test plays
    out (None: the link never waits for a speaker); `sections` change the configuration's."""
    tools = ToolBox(ToolsConfig(enabled=("slow",)), FakeActions(), registry=gated_tools(gate))
    outbox = Outbox(hold_s=8)
    cfg = config_for(server, button={"mode": "toggle"}, **sections)
    talk: Conversation | None = None

    def on_event(event: Event) -> None:
        assert talk is not None
        talk.feed(event)
        if speaker is not None and isinstance(event, ReplyAudio) and not event.talked_over:
            speaker.feed(event.pcm)

    link = LiveLink(cfg, outbox, on_event, lambda _item, _t: None, tools=tools, speaker=speaker)
    talk = Conversation(link, outbox)
    talk.feed(Pressed())
    link.open(talk.machine.session)
    try:
        await until(lambda: talk.machine.state is State.LISTENING, within=10)
        yield talk
    finally:
        await link.close()


async def test_hands_free_a_drop_while_the_tool_works_says_the_answer_is_lost(
    server: LiveServer, gate: Gate,
) -> None:
    """"What time is it?": the service hears the end of it, the model calls a tool, and
    the connection drops while the tool works. The call ends with the connection (its
    line says LIVE_TOOL_RESULT=ended), and the answer will never come. Push-to-talk the
    person hears the error earcon; hands-free the box went back to listening without a
    sound, the person waiting for an answer until the silence hung up."""
    server.queue_tool_call("slow")
    async with conversation(server, gate) as talk:
        talk.say()
        await gate.entered()
        assert talk.machine.state is State.THINKING, "the box works on the tool"
        server.drop()
        await until(lambda: any(isinstance(e, Reconnected) for e in talk.events), within=10)
    lost = next(e for e in talk.events if isinstance(e, Reconnecting))
    assert lost.reply_lost, talk.events
    assert talk.earcons == [Earcon.LISTEN_START, Earcon.ERROR], talk.events
    assert talk.machine.state is State.LISTENING and talk.machine.session_open



async def test_hands_free_a_drop_after_the_service_withdrew_the_call_owes_no_answer(
    server: LiveServer, gate: Gate,
) -> None:
    """The service withdraws the call (toolCallCancellation: the person spoke over it),
    and the connection drops before anything more: no answer went out, so no reply to one
    was lost, and no error earcon says one was."""
    call = server.queue_tool_call("slow")
    async with conversation(server, gate) as talk:
        talk.say()
        await gate.entered()
        await server.cancel_tool_call(call)
        await until(lambda: talk.machine.state is State.LISTENING, within=10)
        server.drop()
        await until(lambda: any(isinstance(e, Reconnected) for e in talk.events), within=10)
    lost = next(e for e in talk.events if isinstance(e, Reconnecting))
    assert not lost.reply_lost, talk.events
    assert talk.earcons == [Earcon.LISTEN_START], talk.events

async def test_a_go_away_after_a_tools_answer_waits_for_the_reply_to_it() -> None:
    """The Live API's order around a tool: "let me look that up", toolCall, turnComplete
    (and a resumption handle after it); the tool's answer goes out, and a goAway comes
    before the model's reply to it. The box took that moment for a quiet one and moved at
    once, resumed with the handle from before the answer: the next connection's model
    never had it, and the person (hands-free, listening again) heard nothing more."""
    turn = HandsFree()
    moved = False
    try:
        async with asyncio.TaskGroup() as group:
            turn.conn._group = group
            turn.receive(audio())  # "let me look that up"
            await turn.call("t0")
            turn.receive(content(turn_complete=True))
            turn.receive(handle("after-let-me-look"))
            await turn.answer("t0")
            turn.receive(go_away("30s"))
            await asyncio.sleep(0.05)
            turn.receive(audio())  # the answer
            turn.receive(content(turn_complete=True))
            for task in asyncio.all_tasks():
                if task.get_name() == "live-switch":
                    task.cancel()  # its quiet moment came: the test ends here
    except* SwitchNow:
        moved = True
    assert not moved, "moved to a new connection with the reply to the tool's answer owed"


def handle(name: str) -> types.LiveServerMessage:
    update = types.LiveServerSessionResumptionUpdate(new_handle=name, resumable=True)
    return types.LiveServerMessage(session_resumption_update=update)


def go_away(time_left: str) -> types.LiveServerMessage:
    return types.LiveServerMessage(go_away=types.LiveServerGoAway(time_left=time_left))


def test_hands_free_a_text_turns_reply_lost_with_the_connection_says_so() -> None:
    """A text turn (`ctl text`, a hook) into a hands-free conversation, its reply awaited
    when the connection drops: push-to-talk the error earcon says it is lost; hands-free
    the box went on listening without a sound."""
    m = Machine(mode=Mode.TOGGLE)
    earcons: list[Earcon] = []
    lost = Reconnecting(session=1, reason="dropped", reply_lost=True)
    for event in (Pressed(), SetupComplete(session=1), TextTurn("the doorbell rang"), lost):
        m, actions = step(m, event)
        earcons += [a.earcon for a in actions if isinstance(a, PlayEarcon)]
    assert earcons == [Earcon.LISTEN_START, Earcon.ERROR]
    assert m.session_open and Timer.SILENCE in m.timers


async def test_hands_free_a_drop_while_the_model_thinks_over_the_question_still_answers_it(
    monkeypatch: pytest.MonkeyPatch, gate: Gate,
) -> None:
    """"What's the weather tomorrow?": the service hears the end of it (its own activity
    detection; the box sends no end of turn hands-free) and the model thinks a second;
    the connection drops meanwhile. The question was in no resumption handle (they come
    as replies end), and the next connection, resumed with the last one, never heard it:
    the box listened again without a sound, the person waiting for an answer until the
    silence hung up."""
    async with (
        trusted_server(monkeypatch, pace=0, reply_seconds=0.2, think_seconds=1) as server,
        conversation(server, gate) as talk,
    ):
        talk.say()
        await until(lambda: any(isinstance(e, SpeechHeard) for e in talk.events), within=10)
        server.drop()  # the model thinks
        await until(lambda: any(isinstance(e, Reconnected) for e in talk.events), within=10)
        with contextlib.suppress(AssertionError):  # none came
            await until(lambda: any(isinstance(e, ReplyAudio) for e in talk.events), within=5)
    assert any(isinstance(e, ReplyAudio) for e in talk.events), "the question was not answered"
    assert heard_ms(server) == [pytest.approx(1000, abs=WITHIN_MS)], "heard once, whole"
    assert Earcon.ERROR not in talk.earcons


async def test_hands_free_words_said_as_the_connection_drops_reach_the_next_one_whole(
    server: LiveServer, gate: Gate,
) -> None:
    """The person is half way through a question when the connection drops: what they
    said before the drop went into a connection that is gone, in no resumption handle;
    what they say after waits for the next connection. The model heard only the second
    half, and answered that (push-to-talk sends the whole press again)."""
    async with conversation(server, gate) as talk:
        for _ in range(12):
            talk.outbox.put("audio", SPEECH)
        await server.wait_for(lambda: len(server.audio_in(1)) == 12 * len(SPEECH), 5)
        server.drop()
        talk.say(13)  # the rest, held for the next connection
        await until(lambda: any(isinstance(e, Reconnected) for e in talk.events), within=10)
        await until(lambda: any(isinstance(e, ReplyAudio) for e in talk.events), within=10)
    assert heard_ms(server) == [pytest.approx(1000, abs=WITHIN_MS)], "the question heard whole"


async def test_hands_free_words_said_as_a_go_away_deadline_hits_reach_the_next_connection(
    server: LiveServer, gate: Gate,
) -> None:
    """The service's goAway leaves less time than the switch margin while the person
    talks: the box moves mid-question, resumed with the handle from before it. What they
    had said went only into the old connection: the model heard the rest of the question."""
    async with conversation(server, gate) as talk:
        for _ in range(12):
            talk.outbox.put("audio", SPEECH)
        await server.wait_for(lambda: len(server.audio_in(1)) == 12 * len(SPEECH), 5)
        await server.send_go_away("0.5s")  # less than the switch margin: at once
        await until(lambda: any(isinstance(e, Reconnected) for e in talk.events), within=10)
        talk.say(13)
        await until(lambda: any(isinstance(e, ReplyAudio) for e in talk.events), within=10)
    assert heard_ms(server) == [pytest.approx(1000, abs=WITHIN_MS)], "the question heard whole"
    assert Earcon.ERROR not in talk.earcons


async def test_hands_free_a_drop_while_the_models_first_words_play_over_a_tool_says_so(
    server: LiveServer, gate: Gate,
) -> None:
    """"Let me look that up", the tool call, the turn's end (the Live API's order around a
    tool); the connection drops while those words still play and the tool works. They
    play to their end, and then nothing: the answer went with the connection, and the box
    listened on without a sound, the person waiting for the rest."""
    async with conversation(server, gate) as talk:
        await server.send_raw(json.dumps(LET_ME_LOOK))
        await server.send_raw(json.dumps({"toolCall": {"functionCalls": [SLOW_CALL]}}))
        await server.send_raw(json.dumps({"serverContent": {"turnComplete": True}}))
        await gate.entered()
        assert talk.machine.state is State.SPEAKING and talk.machine.reply_done
        server.drop()
        await until(lambda: any(isinstance(e, Reconnected) for e in talk.events), within=10)
        talk.feed(PlaybackDrained())  # "let me look that up" has played
    assert talk.earcons == [Earcon.LISTEN_START, Earcon.ERROR], talk.events
    assert talk.machine.state is State.LISTENING and talk.machine.session_open


#: The model's first words before a tool call (100 ms of them), as the service sends them.
LET_ME_LOOK = {"serverContent": {"modelTurn": {"parts": [{"inlineData": {
    "mimeType": "audio/pcm;rate=24000",
    "data": base64.b64encode(b"\x01\x00" * 2400).decode(),
}}]}}}
SLOW_CALL = {"id": "call-slow", "name": "slow", "args": {}}


def test_push_to_talk_words_played_whole_before_a_lost_answer_end_with_the_error_too() -> None:
    """The same in push-to-talk ("let me look that up", the tool, the drop); a press over
    those words is a new question: its own reply, played to its end, brings no error."""
    def asked_and_lost() -> Machine:
        m = Machine()
        for event in (Pressed(), SetupComplete(session=1), Released(), words(),
                      ToolsAtWork(session=1, calls=1), TurnComplete(session=1),
                      ToolsAtWork(session=1, calls=0), LOST):
            m, _ = step(m, event)
        return m

    m, actions = step(asked_and_lost(), PlaybackDrained())
    assert PlayEarcon(Earcon.ERROR) in actions and m.state is State.IDLE
    m = asked_and_lost()
    earcons: list[Earcon] = []
    for event in (Pressed(), Reconnected(session=1), Released(), words(),
                  TurnComplete(session=1), PlaybackDrained()):
        m, actions = step(m, event)
        earcons += [a.earcon for a in actions if isinstance(a, PlayEarcon)]
    assert Earcon.ERROR not in earcons and m.state is State.IDLE


LOST = Reconnecting(session=1, reason="dropped", reply_lost=True)


def words() -> ReplyAudio:
    return ReplyAudio(session=1, pcm=b"\x01\x00" * 100)


#: [conversation] reply_timeout_s, at its lowest.
REPLY_TIMEOUT_S = 2.0


@contextlib.asynccontextmanager
async def answers_due_soon(
    monkeypatch: pytest.MonkeyPatch, gate: Gate, **server_options: Any
) -> AsyncIterator[tuple[LiveServer, Conversation]]:
    """A hands-free conversation with `reply_timeout_s` at its lowest, on a local server
    of its own (`server_options`: which turns it leaves unanswered, how long it thinks)."""
    async with trusted_server(monkeypatch, pace=0, reply_seconds=0.2, **server_options) as server:
        timeout = {"reply_timeout_s": REPLY_TIMEOUT_S}
        async with conversation(server, gate, conversation=timeout) as talk:
            yield server, talk


async def let_pass(server: LiveServer, talk: Conversation) -> None:
    """Words the model lets pass (the server leaves the first turn unanswered), and
    `reply_timeout_s` after them."""
    talk.say()
    await server.wait_for(lambda: "audio_stream_end" in server.kinds(1, "in"), 5)
    await asyncio.sleep(REPLY_TIMEOUT_S + 0.5)


async def test_hands_free_words_the_model_let_pass_are_not_answered_after_a_later_drop(
    monkeypatch: pytest.MonkeyPatch, gate: Gate,
) -> None:
    """Someone in the room says something the model lets pass (words to another person,
    the TV: proactive audio is always on with gemini-3.8-live), and no handle comes, as
    none follows a turn without a reply. Long after (reply_timeout_s), the connection
    drops: those words went out again on the next one, and the model answered them
    there, out of the blue, stuck to whatever the person said next."""
    async with answers_due_soon(monkeypatch, gate, unanswered_turns=1) as (server, talk):
        await let_pass(server, talk)
        server.drop()
        await until(lambda: any(isinstance(e, Reconnected) for e in talk.events), within=10)
        talk.say(12)  # a new question, after the reconnect
        await server.wait_for(lambda: any(400 < ms < 600 for ms in heard_ms(server)), 10)
    assert heard_ms(server) == [pytest.approx(480, abs=WITHIN_MS)], "only the new question answered"


async def test_hands_free_a_question_after_words_let_pass_is_heard_alone_on_the_next_connection(
    monkeypatch: pytest.MonkeyPatch, gate: Gate,
) -> None:
    """Words the model let pass, and long after them (reply_timeout_s) a question, which
    the model thinks over when the connection drops. Both went out again on the next
    connection, one after the other: the model heard the question with the old words
    stuck in front of it, as one."""
    options = {"unanswered_turns": 1, "think_seconds": 1}
    async with answers_due_soon(monkeypatch, gate, **options) as (server, talk):
        await let_pass(server, talk)
        talk.say(12)  # the question
        await until(lambda: any(isinstance(e, SpeechHeard) for e in talk.events), within=10)
        server.drop()  # the model thinks
        await until(lambda: any(isinstance(e, Reconnected) for e in talk.events), within=10)
        await until(lambda: any(isinstance(e, ReplyAudio) for e in talk.events), within=10)
        await server.wait_for(lambda: bool(heard_ms(server)), 5)
    assert heard_ms(server) == [pytest.approx(480, abs=WITHIN_MS)], "the question heard alone"


async def test_hands_free_a_drop_while_the_answer_plays_does_not_ask_the_question_again(
    monkeypatch: pytest.MonkeyPatch, gate: Gate,
) -> None:
    """The model has begun its answer (it comes no faster than it plays) when the
    connection drops: no handle covers the question yet (one comes as the reply ends),
    but it was answered. Sent again on the next connection, it was answered twice; so
    was the room's sound over the answer (its echo, a cough) sent again."""
    async with (
        trusted_server(monkeypatch, pace=1, reply_seconds=3) as server,
        conversation(server, gate) as talk,
    ):
        talk.say()
        await until(lambda: any(isinstance(e, ReplyAudio) for e in talk.events), within=10)
        for _ in range(3):
            talk.outbox.put("audio", ROOM)  # under the answer: too quiet to interrupt it
        sent = 25 * len(SPEECH) + 3 * len(ROOM)
        await server.wait_for(lambda: len(server.audio_in(1)) == sent, 5)
        server.drop()  # mid-answer
        await until(lambda: any(isinstance(e, Reconnected) for e in talk.events), within=10)
        talk.say(12)  # the next question
        await server.wait_for(lambda: "turn_complete" in server.kinds(2, "out"), 10)
    assert len(server.audio_in(2)) == 12 * len(SPEECH), "the answered question went again"


async def test_hands_free_a_room_the_quiet_gate_never_pauses_for_is_not_sent_again_whole(
    monkeypatch: pytest.MonkeyPatch, gate: Gate,
) -> None:
    """A television or a fan the quiet gate lets through: the stream never pauses, the
    model lets it all pass, and no handle comes. At a drop the last minute of it went out
    again, as fast as the link took it, ahead of what the person said next; only what
    went out within reply_timeout_s may be the question the model is still to answer."""
    async with answers_due_soon(monkeypatch, gate) as (server, talk):
        chunks = round((REPLY_TIMEOUT_S + 2) / CHUNK_S)
        for _ in range(chunks):  # the room's sound, in real time
            talk.outbox.put("audio", ROOM)
            await asyncio.sleep(CHUNK_S)
        await server.wait_for(lambda: len(server.audio_in(1)) == chunks * len(ROOM), 5)
        server.drop()
        await until(lambda: any(isinstance(e, Reconnected) for e in talk.events), within=10)
        talk.say(12)  # a question, after the reconnect
        await server.wait_for(lambda: "turn_complete" in server.kinds(2, "out"), 10)
    again_s = (len(server.audio_in(2)) - 12 * len(SPEECH)) / len(ROOM) * CHUNK_S
    assert again_s <= REPLY_TIMEOUT_S + 0.5, f"{again_s:.1f} s of the room sent again"
