"""Review: tool calls meeting cancellations, odd calls from the service, and big results."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from google import genai
from google.genai import types
from google.genai.live import AsyncSession
from helpers import until
from wire import config_for

from device import states as s
from device.config import LiveConfig, ToolsConfig
from device.live.connection import Connection
from device.live.hooks import Hooks
from device.live.session import LiveLink
from device.live.turn import WireTurn
from device.outbox import Outbox
from device.states import Machine, Mode, State
from device.tools import Device, Registry, ToolBox
from rig.server.server import LiveServer

WAIT_S = 5.0


class Gates:
    """Tool bodies that block until the test opens them, one gate per call made."""

    def __init__(self) -> None:
        self.started = threading.Semaphore(0)
        self.opened = threading.Event()

    def run(self) -> dict[str, Any]:
        self.started.release()
        self.opened.wait(WAIT_S)
        return {"done": True}


@pytest.fixture
def gates() -> Iterator[Gates]:
    gates = Gates()
    yield gates
    gates.opened.set()  # never leave a worker thread blocked behind the test


def registry_with(gates: Gates) -> Registry:
    registry = Registry()

    @registry.tool
    def slow(device: Device) -> dict[str, Any]:
        """Waits for the test."""
        return gates.run()

    @registry.tool
    def quick(device: Device) -> dict[str, Any]:
        """Answers at once."""
        return {"done": True}

    return registry


class Actions:
    def volume(self) -> float:
        return 0.5

    def set_volume(self, level: float) -> None: ...

    def end_conversation(self) -> None: ...


class Socket:
    """What the SDK session writes to its WebSocket, kept."""

    transport = None

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, message: str) -> None:
        self.sent.append(json.loads(message))

    async def ping(self) -> None: ...


def answered(socket: Socket) -> list[dict[str, Any]]:
    """The function responses the SDK wrote, in order."""
    return [
        response
        for message in socket.sent if "tool_response" in message
        for response in message["tool_response"]["functionResponses"]
    ]


def linked(toolbox: ToolBox | None) -> tuple[Connection, Socket, WireTurn]:
    """A connection over a real SDK session (Gemini API) whose socket keeps what is sent."""
    socket = Socket()
    client = genai.Client(api_key="test-key")
    session = AsyncSession(api_client=client._api_client, websocket=socket)  # type: ignore[arg-type]
    hooks = Hooks(1, lambda event: None, lambda item, t: None, lambda h: None)
    turn = WireTurn()
    conn = Connection(session, contextlib.AsyncExitStack(), LiveConfig(), Outbox(5), hooks,
                      turn, toolbox)
    return conn, socket, turn


def calls(*pairs: tuple[str | None, str]) -> types.LiveServerMessage:
    made = [types.FunctionCall(id=i, name=name, args={}) for i, name in pairs]
    return types.LiveServerMessage(tool_call=types.LiveServerToolCall(function_calls=made))


def cancellation(*ids: str) -> types.LiveServerMessage:
    return types.LiveServerMessage(
        tool_call_cancellation=types.LiveServerToolCallCancellation(ids=list(ids))
    )


async def started(gates: Gates, count: int) -> None:
    for _ in range(count):
        assert await asyncio.to_thread(gates.started.acquire, True, WAIT_S)


# ---- an id the service used twice ------------------------------------------------------


async def test_a_cancelled_id_the_service_used_twice_gets_no_stale_answer(gates: Gates) -> None:
    """Two calls under one id, both still running, then the service withdraws that id:
    neither may be answered (the service no longer waits for it; an answer to an id it
    does not know is refused). Only the newer one was withdrawn, the older answered."""
    toolbox = ToolBox(ToolsConfig(enabled=("slow",)), Actions(), registry=registry_with(gates))
    conn, socket, turn = linked(toolbox)
    async with asyncio.TaskGroup() as group:
        conn._group = group
        conn._dispatch(calls(("x", "slow")))
        conn._dispatch(calls(("x", "slow")))
        await started(gates, 2)
        conn._dispatch(cancellation("x"))
        gates.opened.set()
    assert answered(socket) == [], "a withdrawn call was answered"
    assert not turn.tools_running


async def test_a_call_ending_does_not_shield_a_later_one_with_its_id_from_cancellation(
    gates: Gates,
) -> None:
    """The first call under an id answered quickly; its end forgot the second, still
    running under the same id, so the service's cancellation of it was not honoured."""
    toolbox = ToolBox(ToolsConfig(enabled=("slow", "quick")), Actions(),
                      registry=registry_with(gates))
    conn, socket, _ = linked(toolbox)
    async with asyncio.TaskGroup() as group:
        conn._group = group
        conn._dispatch(calls(("x", "slow")))
        await started(gates, 1)
        conn._dispatch(calls(("x", "quick")))
        await until(lambda: len(answered(socket)) == 1, within=WAIT_S)
        conn._dispatch(cancellation("x"))
        gates.opened.set()
    assert [a["name"] for a in answered(socket)] == ["quick"], "the withdrawn call answered"


# ---- a call the box cannot answer -------------------------------------------------------


async def test_a_call_without_an_id_does_not_end_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The SDK refuses to send a Gemini API function response without an id (ValueError):
    the connection's task group failed with it, the connection ended, and the person's
    reply with it (a reconnect, the error beep). The call is dropped with a journal line."""
    toolbox = ToolBox(ToolsConfig(enabled=("quick",)), Actions(), registry=registry_with(Gates()))
    conn, socket, turn = linked(toolbox)
    async with asyncio.TaskGroup() as group:
        conn._group = group
        conn._dispatch(calls((None, "quick"), ("y", "quick")))
    assert [a["id"] for a in answered(socket)] == ["y"]
    assert not turn.tools_running
    assert any("without an id" in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING)


# ---- a tool's answer has a bound --------------------------------------------------------


def big_tools() -> Registry:
    """Tools as an owner might add them: one reads a whole file, one fails verbosely."""
    registry = Registry()

    @registry.tool
    def read_log(device: Device) -> dict[str, Any]:
        """The whole log file."""
        return {"text": "x" * (8 * 2**20)}

    @registry.tool
    def flaky(device: Device) -> dict[str, Any]:
        """Fails, quoting all it read."""
        raise ValueError("bad reading: " + "y" * 2**20)

    return registry


async def run_alone(toolbox: ToolBox, name: str) -> dict[str, Any]:
    response = await toolbox.run(types.FunctionCall(id="call-1", name=name, args={}))
    assert response.response is not None
    return response.response


async def test_a_huge_result_answers_the_model_with_a_short_error() -> None:
    """8 MB of result went out whole: the person's speech waited behind it on the link
    (seconds on a home uplink), and past the box's unsent bound (16 MB) the connection was
    judged dead, the reply lost. The model cannot use that much of a result anyway."""
    toolbox = ToolBox(ToolsConfig(enabled=("read_log",)), Actions(), registry=big_tools())
    response = await run_alone(toolbox, "read_log")
    assert len(json.dumps(response)) < 1000, "the whole result went to the model"
    assert response["error"].startswith("the tool's result is too large")


async def test_an_exception_quoting_a_megabyte_is_answered_cut() -> None:
    toolbox = ToolBox(ToolsConfig(enabled=("flaky",)), Actions(), registry=big_tools())
    response = await run_alone(toolbox, "flaky")
    assert response["error"].startswith("ValueError: bad reading: yyy")
    assert len(response["error"]) < 5000, "the whole exception went to the model"


# ---- talking over the goodbye ------------------------------------------------------------


@pytest.mark.parametrize("stopped", [
    s.Interrupted(session=1),  # the service stops the goodbye it still streams
    s.ReplyDropped(session=1),  # it had sent all of it: the box stops it itself
], ids=["interrupted", "dropped"])
def test_hands_free_talking_over_the_goodbye_keeps_the_conversation(stopped: s.Event) -> None:
    """The model says goodbye and calls end_conversation; hands-free, the person talks
    over it ("wait, one more thing"). The box hung up at once, the service's answer to
    them never heard. Push-to-talk, a press over the goodbye keeps the conversation
    (test_states); speech is hands-free's press."""
    m = Machine(mode=Mode.TOGGLE)
    for event in (s.Pressed(), s.SetupComplete(session=1), s.ReplyAudio(session=1, pcm=b"\1\0"),
                  s.EndConversation(session=1), s.TalkedOver(), stopped):
        m, actions = s.step(m, event)
    assert not any(isinstance(a, s.CloseSession) for a in actions), "hung up on the person"
    assert m.session_open and m.state is State.LISTENING and not m.ending
    for event in (s.ReplyAudio(session=1, pcm=b"\1\0"), s.TurnComplete(session=1),
                  s.PlaybackDrained()):
        m, actions = s.step(m, event)
    assert m.session_open and m.state is State.LISTENING, "the answer to them is heard"


# ---- a tool at work when the service moves the conversation -----------------------------


@contextlib.asynccontextmanager
async def linked_to(server: LiveServer, toolbox: ToolBox) -> AsyncIterator[Talk]:
    """A session on the local server with `toolbox` answering its calls."""
    outbox = Outbox(hold_s=8)
    events: list[s.Event] = []
    link = LiveLink(config_for(server), outbox, events.append, lambda _item, _t: None,
                    tools=toolbox)
    link.open(1)
    try:
        await until(lambda: s.SetupComplete(session=1) in events, within=10)
        yield Talk(link, outbox, events)
    finally:
        await link.close()


@dataclass
class Talk:
    link: LiveLink
    outbox: Outbox
    events: list[s.Event] = field(default_factory=list)


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LiveServer]:
    async with LiveServer(pace=0, reply_seconds=0.2) as live:
        monkeypatch.setenv("SSL_CERT_FILE", live.ca_file)
        yield live


def responses_on(server: LiveServer) -> list[tuple[int, str]]:
    """(connection, call id) of every function response the server received."""
    return [
        (entry.conn, response["id"])
        for entry in server.entries(direction="in") if entry.kind == "tool_response"
        for response in (entry.raw or {})["tool_response"]["functionResponses"]
    ]


async def ask(talk: Talk) -> None:
    """A push-to-talk question (no sound needed: the server counts the activity)."""
    talk.outbox.put("activity_start")
    talk.outbox.put("activity_end")


async def test_a_go_away_while_a_tool_works_waits_for_its_answer_and_the_reply(
    server: LiveServer, gates: Gates,
) -> None:
    """The answer goes out on the connection that asked, the reply is heard, then the box
    moves: nothing of the call reaches the next connection."""
    toolbox = ToolBox(ToolsConfig(enabled=("slow",)), Actions(), registry=registry_with(gates))
    call_id = server.queue_tool_call("slow")
    async with linked_to(server, toolbox) as talk:
        await ask(talk)
        await started(gates, 1)
        await server.send_go_away("20s")
        await asyncio.sleep(0.3)
        gates.opened.set()
        await until(lambda: any(isinstance(e, s.Reconnected) for e in talk.events), within=10)
        replies = [e for e in talk.events if isinstance(e, s.ReplyAudio)]
    assert replies, "the reply to the tool's answer was not heard"
    assert responses_on(server) == [(1, call_id)]
    assert not any(isinstance(e, s.Reconnecting) for e in talk.events)


async def test_a_go_away_deadline_while_a_tool_works_drops_its_answer_with_a_line(
    server: LiveServer, gates: Gates, caplog: pytest.LogCaptureFixture,
) -> None:
    """The deadline comes first: the call is dropped with the connection (its answer on the
    next one would be to an id that session does not know: a 1007 that ends it), the
    journal says so, and the turn ends with the error beep's event."""
    caplog.set_level(logging.INFO)
    toolbox = ToolBox(ToolsConfig(enabled=("slow",)), Actions(), registry=registry_with(gates))
    server.queue_tool_call("slow")
    async with linked_to(server, toolbox) as talk:
        await ask(talk)
        await started(gates, 1)
        await server.send_go_away("0.5s")
        await until(lambda: any(isinstance(e, s.Reconnected) for e in talk.events), within=10)
        gates.opened.set()
        await asyncio.sleep(0.3)
        talk.outbox.put("text", "and now?")
        await until(lambda: sum(isinstance(e, s.TurnComplete) for e in talk.events) >= 1,
                    within=10)
    assert responses_on(server) == []
    lost = [e for e in talk.events if isinstance(e, s.Reconnecting)]
    assert lost and lost[0].reply_lost, talk.events
    ended = [r for r in caplog.records if getattr(r, "LIVE_TOOL_RESULT", None) == "ended"]
    assert len(ended) == 1


async def test_a_press_as_the_tool_answers_does_not_end_the_session(
    server: LiveServer, gates: Gates,
) -> None:
    """Push-to-talk: the tool finishes just as the person presses again. The press went out
    first; the service withdrew the call for it, and the box's answer crossed the
    withdrawal on the wire: an answer to an id the service no longer knows."""
    toolbox = ToolBox(ToolsConfig(enabled=("slow",)), Actions(), registry=registry_with(gates))
    server.queue_tool_call("slow")
    async with linked_to(server, toolbox) as talk:
        await ask(talk)
        await started(gates, 1)
        talk.link.supersede_reply()
        talk.outbox.put("activity_start")  # the press: out before the tool's answer
        gates.opened.set()  # the answer follows it, before the withdrawal is read
        await asyncio.sleep(0.5)
        talk.outbox.put("activity_end")
        await until(lambda: any(isinstance(e, s.TurnComplete | s.ConnectionLost | s.Reconnecting)
                                for e in talk.events), within=10)
    assert not any(isinstance(e, s.ConnectionLost | s.Reconnecting) for e in talk.events), (
        talk.events)


async def test_a_call_that_crosses_a_press_on_the_wire_is_left_unanswered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Push-to-talk: the service calls a quick tool for the last turn as the person presses
    again. The call was on its way before the service read the press; it withdraws it
    when it does, and the box's answer, a millisecond later, went to an id it no longer
    knew (the 1007 above). While the button is held no call can be the new turn's."""
    caplog.set_level(logging.INFO)
    toolbox = ToolBox(ToolsConfig(enabled=("quick",)), Actions(), registry=registry_with(Gates()))
    conn, socket, turn = linked(toolbox)
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
