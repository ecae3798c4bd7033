"""What the service may send has a bound: odd messages, found by generating them, fed
to the box's own handling of the service's messages."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import traceback
from collections.abc import Callable
from typing import Any

import pytest
from google import genai
from google.genai import errors
from google.genai.live import AsyncSession
from helpers import journal_lines, until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_read_ahead import Speaker as SwitchedSpeaker
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close
from wire import config_for, set_up_link

from device.ask import ask
from device.config import LiveConfig
from device.doctor.network import check_network
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status
from device.live.connection import Connection, SwitchNow
from device.live.hooks import Hooks
from device.live.turn import WireTurn
from device.live.wire import REPLY_RATE, pcm_mime
from device.outbox import Kind, Outbox
from device.states import (
    AwaitDrain,
    ClearPlayback,
    Event,
    Machine,
    Mode,
    PlaybackDrained,
    PlayReply,
    Pressed,
    Released,
    ReplyAudio,
    SendActivityEnd,
    SendActivityStart,
    SendText,
    SpeechHeard,
    SupersedeReply,
    TalkedOver,
    TextTurn,
    TurnComplete,
    step,
)
from rig.server.server import LiveServer

# ---- generated: whatever the SDK reads, in any order, through the box's own handling -------


@functools.cache
def sdk_client() -> Any:
    """The SDK's API client, for sessions over a scripted WebSocket (one: it takes 50 ms)."""
    return genai.Client(api_key="test-key")._api_client


class Transport:
    """Enough of a transport for the link's reach past the SDK (no socket under it)."""

    def abort(self) -> None: ...

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def set_read_buffer_limits(self, high: int | None = None) -> None: ...

    def get_write_buffer_size(self) -> int:
        return 0


class ScriptedWire:
    """The service's side of one connection: its frames, and between them what happens on
    the box's side (`Callable`s, run in order); then the service's normal close."""

    def __init__(self, script: list[bytes | Callable[[], None]]) -> None:
        self.script = list(script)
        self.transport = Transport()
        self.answers: list[str] = []

    def data_received(self, data: bytes) -> None: ...

    async def recv(self, decode: bool | None = None) -> bytes:
        while self.script:
            await asyncio.sleep(0)  # the connection's other tasks run between frames
            step = self.script.pop(0)
            if isinstance(step, bytes):
                return step
            step()
        raise ConnectionClosed(Close(1000, ""), None)

    async def send(self, message: str) -> None:
        self.answers.append(message)

    async def ping(self) -> asyncio.Future[float]:
        pong: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        pong.set_result(0.0)
        return pong

    async def close(self, *_: object) -> None: ...


def serve(script: list[bytes | Callable[[], None]], hooks: Hooks, turn: WireTurn) -> Connection:
    """A connection of the box over the scripted wire."""
    session = AsyncSession(api_client=sdk_client(), websocket=ScriptedWire(script))
    stack = contextlib.AsyncExitStack()
    return Connection(session, stack, LiveConfig(), Outbox(5), hooks, turn)


def server_content(**content: Any) -> bytes:
    return json.dumps({"serverContent": content}).encode()


def audio_part(pcm: bytes, mime: str = pcm_mime(REPLY_RATE)) -> dict[str, Any]:
    return {"inlineData": {"mimeType": mime, "data": base64.b64encode(pcm).decode()}}


MIME_TYPES = [pcm_mime(REPLY_RATE), pcm_mime(16000), pcm_mime(8000), "audio/pcm", "audio/wav",
              "audio/pcm;rate=0", "audio/pcm;rate=abc", "AUDIO/PCM; RATE=44100", ""]  # fmt: skip
CONTROLS = ["\x00\x1b[31mred\r\n", "\u202e\x07", "w" * 20_000]
odd_text = st.text(max_size=12) | st.sampled_from(CONTROLS)
odd_audio = st.builds(
    lambda length, mime: audio_part(bytes([1]) * length, mime),
    st.sampled_from([0, 1, 3, 960, 961, 48_001]),
    st.sampled_from(MIME_TYPES),
)
odd_part = odd_audio | st.builds(lambda t: {"text": t}, odd_text) | st.just({"thought": True})
odd_content = st.fixed_dictionaries({}, optional={
    "modelTurn": st.fixed_dictionaries({"parts": st.lists(odd_part, max_size=3)}),
    "turnComplete": st.booleans(),
    "interrupted": st.booleans(),
    "generationComplete": st.booleans(),
    "interactionStatus": st.sampled_from(["IDLE", "IN_PROGRESS", "NEWER_THAN_THIS_SDK"]),
    "inputTranscription": st.fixed_dictionaries({"text": odd_text}),
    "outputTranscription": st.fixed_dictionaries({"text": odd_text}),
    "turnCompleteReason": st.sampled_from(["MALFORMED_FUNCTION_CALL", "NEWER_THAN_THIS_SDK"]),
})  # fmt: skip
odd_call = st.fixed_dictionaries({}, optional={
    "id": st.sampled_from(["", "c1", "c2"]),
    "name": st.sampled_from(["get_time", "end_conversation", "n" * 300]),
    "args": st.dictionaries(st.text(max_size=3), st.integers() | odd_text, max_size=3),
})  # fmt: skip
odd_message = st.fixed_dictionaries({}, optional={
    "serverContent": odd_content,
    "toolCall": st.fixed_dictionaries({"functionCalls": st.lists(odd_call, max_size=3)})
    | st.just({"functionCalls": [{"id": f"c{n}", "name": "get_time"} for n in range(300)]}),
    "toolCallCancellation": st.fixed_dictionaries({"ids": st.lists(st.sampled_from(["c1", "x"]))}),
    "goAway": st.fixed_dictionaries({}, optional={"timeLeft": st.sampled_from(
        ["0s", "5s", "-5s", "1e9s", "9" * 400 + "s", "soon", ""])}),
    "sessionResumptionUpdate": st.fixed_dictionaries({}, optional={
        "newHandle": st.text(max_size=4) | st.just("h" * 900_000), "resumable": st.booleans()}),
    "usageMetadata": st.fixed_dictionaries({"totalTokenCount": st.integers()}),
    "setupComplete": st.just({}),
}).map(lambda message: json.dumps(message).encode())  # fmt: skip


@pytest.mark.filterwarnings("ignore:.* is not a valid :UserWarning")
@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
@given(script=st.lists(odd_message | st.sampled_from(["full", "room"]), max_size=10))
def test_whatever_the_sdk_reads_ends_no_connection_in_the_box_nor_floods_the_journal(
    script: list[bytes | str],
) -> None:
    """Messages the SDK reads, odd in every field and order, with the speaker full or not:
    the connection serves until the service closes it (or moves it, goAway), never ends
    in the box's own code, and says a journal line per thing a message says at most (a
    part not played, each side's words, calls it cannot run), never one per part or call."""
    speaker, turn = SwitchedSpeaker(), WireTurn()
    hooks = Hooks(1, lambda event: None, lambda item, t: None, lambda handle: None, speaker)
    steps: list[bytes | Callable[[], None]] = [
        step if isinstance(step, bytes)
        else (speaker.room.clear if step == "full" else speaker.room.set)
        for step in script
    ]  # fmt: skip
    with journal_lines("device") as journal:
        conn = serve(steps, hooks, turn)
        ended = asyncio.run(conn.run())
    closed = isinstance(ended, errors.APIError) and ended.code == 1000
    assert closed or isinstance(ended, SwitchNow), "".join(traceback.format_exception(ended))
    lines = [record["MESSAGE"][:80] for record in journal.records]
    assert len(lines) <= 4 * len(script) + 1, lines
    assert turn.tools_running == 0 and turn.earlier_unanswered >= 0


class Box:
    """The state machine fed what the connection reports, performing what reaches the wire
    and the speaker at once: what the person hears, in order (None: the speaker cleared)."""

    def __init__(self, mode: Mode, turn: WireTurn) -> None:
        self.machine = Machine(mode=mode, session_open=True, session=1, connected=True)
        self.turn = turn
        self.heard: list[bytes | None] = []
        self.connection: Connection | None = None

    def take(self, event: Event) -> None:
        self.machine, actions = step(self.machine, event)
        for action in actions:
            match action:
                case PlayReply(pcm):
                    self.heard.append(pcm)
                case ClearPlayback():
                    self.heard.append(None)
                case SupersedeReply():
                    self.turn.supersede()
                case SendActivityStart() | SendText():
                    self.sent("text" if isinstance(action, SendText) else "activity_start")
                case SendActivityEnd():
                    self.turn.sent("activity_end")
                case AwaitDrain():
                    self.take(PlaybackDrained())  # played at once

    def sent(self, kind: Kind) -> None:
        """The person's new turn goes out: the calls running are withdrawn with it."""
        self.turn.sent(kind)
        if self.connection is not None:
            self.connection._withdraw_tools(list(self.connection._tool_tasks))

    def heard_since_last_silenced(self) -> list[bytes]:
        cleared = max((i for i, pcm in enumerate(self.heard) if pcm is None), default=-1)
        return [pcm for pcm in self.heard[cleared + 1 :] if pcm is not None]


ANSWER = b"\x07\x00" * 480
TOOL_CALL = json.dumps({"toolCall": {"functionCalls": [{"id": "c1", "name": "get_time"}]}})
THE_SERVICE_SAYS = [
    server_content(modelTurn={"parts": [audio_part(b"\x01\x00" * 480)]}),
    server_content(modelTurn={"parts": [audio_part(b"\x02" * 481)]}),
    server_content(modelTurn={"parts": [audio_part(b"\x03\x00" * 320, pcm_mime(16000))]}),
    server_content(turnComplete=True),
    server_content(interrupted=True),
    server_content(interrupted=True, turnComplete=True),
    server_content(generationComplete=True),
    server_content(turnComplete=True, interactionStatus="IN_PROGRESS"),
    server_content(inputTranscription={"text": "hey"}),
    server_content(outputTranscription={"text": "yo"}),
    TOOL_CALL.encode(),
    json.dumps({"toolCallCancellation": {"ids": ["c1"]}}).encode(),
]
#: What the person does between the service's messages, in each mode.
THE_PERSON_DOES = {
    Mode.PUSH_TO_TALK: [Pressed(), Released(), TextTurn("hi")],
    Mode.TOGGLE: [TextTurn("hi"), SpeechHeard(from_the_room=True), TalkedOver()],
}


@pytest.mark.parametrize("mode", list(Mode))
@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_after_whatever_came_before_a_whole_turn_the_next_question_is_answered_aloud(
    mode: Mode, data: st.DataObject
) -> None:
    """The service's messages and the person's presses, words and talking over in any
    order; once a turn has ended whole, the answer to the next question is heard, not
    taken for the rest of an old reply."""
    happenings = st.sampled_from([*THE_SERVICE_SAYS, *THE_PERSON_DOES[mode]])
    before = data.draw(st.lists(happenings, max_size=10), label="before")
    turn = WireTurn()
    box = Box(mode, turn)
    if mode is Mode.PUSH_TO_TALK:
        ask: list[Event | bytes] = [Pressed(), Released()]
    else:
        ask = [SpeechHeard(from_the_room=True), server_content(inputTranscription={"text": "q"})]
    whole_turn_ends = [Released()] if mode is Mode.PUSH_TO_TALK else []
    script = [*before, *whole_turn_ends, server_content(turnComplete=True), *ask,
              server_content(modelTurn={"parts": [audio_part(ANSWER)]}),
              server_content(turnComplete=True)]  # fmt: skip
    steps = [s if isinstance(s, bytes) else functools.partial(box.take, s) for s in script]
    hooks = Hooks(1, box.take, lambda item, t: None, lambda handle: None)
    box.connection = serve(steps, hooks, turn)
    asyncio.run(box.connection.run())
    assert ANSWER in box.heard_since_last_silenced()


#: Odd messages the generated tests above turned up, each one the SDK reads (tool calls
#: are left out: the local server, as the service, refuses answers to calls it never made).
ODD_MESSAGES = [
    server_content(modelTurn={"parts": [audio_part(b"\x01" * 961, "audio/wav")]}),
    server_content(modelTurn={"parts": [audio_part(b"\x02" * 3, pcm_mime(16000))]}),
    server_content(interrupted=True),
    server_content(interrupted=True),
    server_content(turnComplete=True),
    server_content(
        inputTranscription={"text": CONTROLS[1]},
        outputTranscription={"text": CONTROLS[0]},
        interactionStatus="NEWER_THAN_THIS_SDK",
        turnComplete=True,
    ),
    json.dumps({"toolCallCancellation": {"ids": ["c1", "unknown"]}}).encode(),
    json.dumps({"sessionResumptionUpdate": {"newHandle": "h" * 900_000, "resumable": True}})
    .encode(),
    json.dumps({"usageMetadata": {"totalTokenCount": 2**62}}).encode(),
    json.dumps({"setupComplete": {}}).encode(),
    json.dumps({"brandNewMessage": {"x": 1}}).encode(),
]


@pytest.mark.filterwarnings("ignore:.* is not a valid :UserWarning")
async def test_through_the_local_server_odd_messages_cost_neither_the_connection_nor_a_turn(
    server: LiveServer,
) -> None:
    """The odd messages above, on the wire of a real session: the connection stays, a turn
    after them is answered aloud, and the journal says a line or two for each at most."""
    async with set_up_link(server) as (link, outbox, events):
        with journal_lines("device") as journal:
            for frame in ODD_MESSAGES:
                await server.send_raw(frame)
            await asyncio.sleep(0.2)
            del events[:]
            outbox.put("text", "are you still there?")
            await until(lambda: any(isinstance(e, TurnComplete) for e in events), within=10)
    assert link.connections == 1, [record["MESSAGE"] for record in journal.records]
    assert any(isinstance(e, ReplyAudio) and not e.talked_over for e in events), events
    lines = [record["MESSAGE"][:80] for record in journal.records]
    assert len(lines) <= 2 * len(ODD_MESSAGES), lines


#: A message of a type this SDK cannot map (a newer service's): the SDK raises TypeError.
NEWER_MESSAGE = json.dumps({"brandNewMessage": {"x": 1}})


async def said_after_setup(server: LiveServer, frame: str) -> None:
    """The service's first message after its setupComplete is `frame`."""
    await server.wait_for(lambda: "setup_complete" in server.kinds(direction="out"), 10)
    await server.send_raw(frame)


async def test_ask_reads_past_a_message_of_a_newer_service_as_the_daemon_does(
    server: LiveServer,
) -> None:
    """The daemon skips a message of a type its SDK does not know (a newer service's)
    and serves on; `ask` failed its turn on it: "turn 1: TypeError: '<=' not supported
    between instances of 'int' and 'NoneType'"."""
    replies: list[Any] = []
    newer = asyncio.create_task(said_after_setup(server, NEWER_MESSAGE))
    await ask(config_for(server), ["hello"], on_reply=lambda n, reply: replies.append(reply))
    await newer
    (reply,) = replies
    assert reply.audio and reply.first_audio_s is not None


async def test_the_doctors_turn_passes_past_a_message_of_a_newer_service(
    server: LiveServer,
) -> None:
    """`doctor network --turn` said the Live API failed (FAIL, "Live turn: TypeError")
    where the daemon talked on."""
    newer = asyncio.create_task(said_after_setup(server, NEWER_MESSAGE))
    context = Context(config_for(server), Options(turn=True), Progress(spinner=False))
    result = await check_network(context)
    await newer
    assert result.status is Status.PASS, result
    assert "first reply audio" in result.measured


async def test_the_doctors_turn_answers_a_tool_the_model_calls_and_hears_its_reply(
    server: LiveServer,
) -> None:
    """The doctor sets the session up as the daemon does, tools declared; a model that
    called one for its question waited for an answer that never came, and the check said
    "Live turn: no answer ... in 30 s" with the advice that the service may be down."""
    call_id = server.queue_tool_call("get_time")
    context = Context(config_for(server), Options(turn=True), Progress(spinner=False))
    result = await check_network(context)
    assert result.status is Status.PASS, result
    assert "first reply audio" in result.measured
    answered = [
        response
        for entry in server.entries(direction="in") if entry.kind == "tool_response"
        for response in (entry.raw or {})["tool_response"]["functionResponses"]
    ]
    assert [response["id"] for response in answered] == [call_id]


async def test_ask_passes_a_tool_call_without_an_id_as_the_daemon_does() -> None:
    """The SDK refuses a Gemini API answer without an id: `ask` and `doctor --turn`
    answered every call and ended the turn with its ValueError, where the daemon leaves
    such a call unanswered and talks on."""
    from device.live.client import run_turn

    frames = [
        json.dumps({"toolCall": {"functionCalls": [{"name": "get_time", "args": {}}]}}).encode(),
        json.dumps({"serverContent": {"outputTranscription": {"text": "It is noon."}}}).encode(),
        json.dumps({"serverContent": {"turnComplete": True}}).encode(),
    ]
    wire = ScriptedWire(list(frames))
    session = AsyncSession(api_client=sdk_client(), websocket=wire)  # type: ignore[arg-type]
    reply = await run_turn(session, "What time is it?")
    assert reply.text == "It is noon."
    assert not any("toolResponse" in answer for answer in wire.answers), wire.answers
