"""A long conversation across goAway switches, through the local server and the real
google-genai SDK (in-process, no sound server): every word reaches the session that
answers, each switch resumes with the newest handle, the box stays flat."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import logging
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from fakes import FakeActions, Gate, gated_tools
from helpers import trusted_server, until
from wire import at, config_for

from device.config import ToolsConfig
from device.live.connection import TOOL_CALLS_LIMIT, Connection
from device.live.session import LiveLink
from device.live.wire import MIC_RATE
from device.outbox import Item, Outbox
from device.states import (
    ConnectionLost,
    Event,
    Reconnected,
    Reconnecting,
    ReplyAudio,
    SetupComplete,
    TurnComplete,
)
from device.tools import TOOL_THREADS_LIMIT, ToolBox
from rig.server.connection import Utterance
from rig.server.server import LiveServer

CHUNK_S = 0.1
CHUNK = b"\x01\x00" * int(MIC_RATE * CHUNK_S)
#: What the service may hear off a question's length: under half a chunk, so that a chunk
#: lost or sent twice across a switch shows (a tolerance of a whole chunk hid both).
WITHIN_MS = CHUNK_S * 1000 / 2


def heard_ms(server: LiveServer) -> list[int]:
    """What the service says it heard of each turn it answered, from its transcriptions."""
    lines = [
        (e.raw or {})["serverContent"]["outputTranscription"]["text"]
        for e in server.entries(direction="out")
        if e.kind == "transcription_out"
    ]
    return [int(m.group(1)) for line in lines if (m := re.search(r"heard (\d+) ms", line))]


@dataclass
class Talk:
    """One session's link to the local server, as the appliance drives it."""

    link: LiveLink
    outbox: Outbox
    events: list[Event] = field(default_factory=list)
    sent: list[Item] = field(default_factory=list)

    async def first_turn(self, server: LiveServer) -> None:
        """A text turn answered, and the handle that came after it: one to resume with."""
        self.outbox.put("text", "hello")
        await until(lambda: TurnComplete(session=1) in self.events, within=10)
        await server.wait_for(lambda: "resumption_update" in server.kinds(direction="out"), 5)

    def ask(self) -> None:
        """A push-to-talk question (no sound needed: the server counts the activity)."""
        self.outbox.put("activity_start")
        self.outbox.put("activity_end")

    async def speak(self, chunks: int, chunk: bytes = CHUNK) -> None:
        """Microphone audio as a card delivers it, CHUNK_S apart."""
        for _ in range(chunks):
            self.outbox.put("audio", chunk)
            await asyncio.sleep(CHUNK_S)


@contextlib.asynccontextmanager
async def talking(
    server: LiveServer, hold_s: float = 8, tools: ToolBox | None = None
) -> AsyncIterator[Talk]:
    """A session open on `server` (its setup answered) for the block, closed after it;
    `tools` answer the calls the server makes."""
    outbox = Outbox(hold_s=hold_s)
    events: list[Event] = []
    sent: list[Item] = []
    link = LiveLink(
        config_for(server), outbox, events.append, lambda item, _t: sent.append(item),
        tools=tools,
    )
    link.open(1)
    try:
        await until(lambda: SetupComplete(session=1) in events, within=10)
        yield Talk(link, outbox, events, sent)
    finally:
        await link.close()


async def test_speech_held_across_a_go_away_deadline_reaches_the_resumed_session_whole(
    server: LiveServer,
) -> None:
    """Push-to-talk held through a goAway whose time runs out: the box moves mid-question,
    resumed with the handle from before the press. What was said on the old connection is
    in no handle: it is sent again after the reopened activityStart, and the resumed
    session (the model) hears the question whole."""
    async with talking(server) as talk:
        await talk.first_turn(server)
        talk.outbox.put("activity_start")
        await talk.speak(10)  # one second of the question on the first connection
        await server.send_go_away("0.5s")  # less than the switch margin: at once
        await until(lambda: any(isinstance(e, Reconnected) for e in talk.events), within=10)
        assert not any(isinstance(e, Reconnecting) for e in talk.events), "no connecting LEDs"
        await talk.speak(10)  # one more second on the second
        talk.outbox.put("activity_end")
        await until(lambda: len(heard_ms(server)) == 1, within=10)
    assert heard_ms(server) == [pytest.approx(2000, abs=WITHIN_MS)], "the question heard whole"


async def test_a_switch_the_service_will_not_take_at_once_says_the_box_is_between_connections(
    server: LiveServer,
) -> None:
    """Push-to-talk held through a goAway whose next connection the service refuses for a
    while. After a drop the machine is told (the LEDs say connecting); after a goAway it
    was not: the LEDs said listening for as long as the service refused (up to
    reconnect_for_s, 30 s by default), nothing reaching it. What was said meanwhile waits,
    and reaches the resumed session."""
    async with talking(server) as talk:
        await talk.first_turn(server)
        talk.outbox.put("activity_start")
        await talk.speak(5)
        server.config.refuse_setup = (1011, "internal error")  # tried again, not a refusal
        await server.send_go_away("0.1s")  # less than the switch margin: at once
        await talk.speak(10)
        told = [e for e in talk.events if isinstance(e, Reconnecting)]
        assert len(told) == 1 and not told[0].reply_lost, talk.events
        assert not any(isinstance(e, Reconnected) for e in talk.events)
        server.config.refuse_setup = None
        await until(lambda: any(isinstance(e, Reconnected) for e in talk.events), within=10)
        talk.outbox.put("activity_end")
        await until(lambda: len(heard_ms(server)) == 1, within=10)
    assert heard_ms(server) == [pytest.approx(1500, abs=WITHIN_MS)], "the question heard whole"


def said(server: LiveServer) -> list[str]:
    """The service's transcription of each reply it finished, in order."""
    return [
        (e.raw or {})["serverContent"]["outputTranscription"]["text"]
        for e in server.entries(direction="out")
        if e.kind == "transcription_out"
    ]


def newest_handles(server: LiveServer) -> dict[int, str]:
    """The newest resumable handle each connection was given."""
    newest: dict[int, str] = {}
    for e in server.entries(direction="out"):
        update = (e.raw or {}).get("sessionResumptionUpdate") or {}
        if update.get("resumable") and update.get("newHandle"):
            newest[e.conn] = update["newHandle"]
    return newest


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_two_hundred_switches_keep_every_turn_once_and_the_box_flat(
    server: LiveServer,
) -> None:
    """A conversation left running for hours: a goAway every ten minutes. Each switch
    resumes with the newest handle, every turn is answered once, and the box's tasks,
    sockets and connections stay as they were."""
    switches = 200
    async with talking(server) as talk:
        for n in range(1, switches + 1):
            talk.outbox.put("text", f"turn {n}")
            await until(lambda n=n: len(said(server)) == n, within=10)
            await server.send_go_away("20s")
            await until(lambda n=n: talk.link.connections == n + 1, within=10)
            await until(lambda n=n: talk.events.count(Reconnected(session=1)) == n, within=10)
            if n == 10:
                tasks, fds = len(asyncio.all_tasks()), open_fds()
        gc.collect()
        connections = [o for o in gc.get_objects() if isinstance(o, Connection)]
        await asyncio.sleep(0.5)  # the server's side of the last switch winds down
        assert len(asyncio.all_tasks()) <= tasks, [t.get_coro() for t in asyncio.all_tasks()]
        assert open_fds() <= fds, "sockets leaked"
        # The one serving, and the one the last switch ended (its failure still refers to it).
        assert len(connections) <= 2, f"{len(connections)} connections still held"
    assert said(server) == [f'Reply {n}: you said "turn {n}".' for n in range(1, switches + 1)]
    records = server.log.connections()
    assert len(records) == switches + 1
    newest = newest_handles(server)
    for before, after in itertools.pairwise(records):
        assert at(after.setup, "session_resumption", "handle") == newest[before.id]


async def test_a_second_go_away_with_less_time_left_moves_the_box_before_that_time(
    server: LiveServer,
) -> None:
    """The service says 20 s, then (in a hurry, or a newer word) 1 s. Kept to the first
    deadline, the box would wait for the person to finish and the service close the
    connection under it: a lost connection rather than a move (the LEDs say connecting,
    the backoff waits)."""
    async with talking(server) as talk:
        await talk.first_turn(server)
        talk.outbox.put("activity_start")  # the person holds the button and talks
        talk.outbox.put("audio", CHUNK)
        await server.send_go_away("20s")
        await server.send_go_away("1s")
        await talk.speak(20)
        talk.outbox.put("activity_end")
        await until(lambda: len(said(server)) == 2, within=10)
    assert not [e for e in talk.events if isinstance(e, Reconnecting)], "the connection was lost"
    assert heard_ms(server) == [pytest.approx(2100, abs=WITHIN_MS)]


#: A slow uplink (bytes a second): what the box sends backs up in the box, yet a close
#: still carries what waits within its second (`CLOSE_TIMEOUT_S`).
UPLINK = 200_000
ROOM_SOUND = b"\x01\x00" * (MIC_RATE // 10)  # 100 ms the server hears as silence


@pytest.fixture
async def slow_uplink(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LiveServer]:
    options = {"pace": 0, "reply_seconds": 0.2, "uplink_bytes_per_s": UPLINK}
    async with trusted_server(monkeypatch, **options) as live:
        yield live


def questions(server: LiveServer, text: str) -> list[int]:
    """The connections on which the text turn reached the service, in order."""
    return [
        e.conn
        for e in server.entries(direction="in")
        if e.kind == "client_content" and text in json.dumps(e.raw)
    ]


def answers(server: LiveServer, text: str) -> list[int]:
    """The connections on which the service finished a reply to the text turn."""
    return [
        e.conn
        for e in server.entries(direction="out")
        if e.kind == "transcription_out"
        and text in (e.raw or {})["serverContent"]["outputTranscription"]["text"]
    ]


def texts(sent: list[Item]) -> int:
    """The text turns among what the box sent."""
    return sum(item.kind == "text" for item in sent)


async def test_a_text_turn_cut_in_its_drain_by_a_switch_is_answered_once(
    slow_uplink: LiveServer,
) -> None:
    """The person's text turn is on its way, behind speech the link has not carried yet,
    when the service's goAway makes the box switch at once. Its bytes were already handed
    to the socket: the graceful close delivers them, but the old connection is no longer
    read, so its answer is never heard; the resumed session (its handle from before the
    turn) has not got it either. Sent again on the new connection, the turn is answered
    there, once; counted as sent, it would be lost (no answer, "the service moved the
    conversation")."""
    server = slow_uplink
    async with talking(server, hold_s=60) as talk:
        outbox, events, sent = talk.outbox, talk.events, talk.sent
        await talk.first_turn(server)
        for attempt in range(5):
            question = f"what is the time, {attempt}"
            for _ in range(100):  # ten seconds of room sound (hands-free): the link backs up
                outbox.put("audio", ROOM_SOUND)
            # Past websockets' write limit (32 KiB) on its own: its send waits in the drain,
            # unless the kernel's send buffer had room for all of it (then try again).
            outbox.put("text", question + " please" * 6000)
            await until(lambda: len(outbox) == 0, within=10)
            if sent[-1].kind == "audio":
                break  # the question waits in websockets' drain
            await until(lambda: events.count(TurnComplete(session=1)) == texts(sent), within=10)
        else:
            pytest.fail("the question never waited in websockets' drain")
        await server.send_go_away("0s")
        await until(lambda: any(isinstance(e, Reconnected) for e in events), within=10)
        turns = events.count(TurnComplete(session=1)) + 1
        await until(lambda: events.count(TurnComplete(session=1)) == turns, within=10)
    # On the wire again on the new connection (the close may have delivered it to the old).
    assert questions(server, question)[-1] == 2
    assert answers(server, question) == [2], "answered once, where the box listens"
    assert not [e for e in events if isinstance(e, Reconnecting) and e.reply_lost]


async def test_a_press_over_a_reply_then_a_switch_keeps_the_whole_question(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The person presses over a reply and talks; what they said waited in the outbox (a
    slow moment of the link) and goes out in one go. The service answers the press with
    interrupted, turnComplete and a new handle, issued as it read the activityStart: it
    covers none of the question. A switch later in the same press resumes with it: the
    question must go again whole, not from where the handle happened to arrive."""
    async with (
        trusted_server(monkeypatch, pace=1, reply_seconds=5) as server,
        talking(server) as talk,
    ):
        outbox, events = talk.outbox, talk.events
        outbox.put("text", "hello")
        await until(lambda: any(isinstance(e, ReplyAudio) for e in events), within=10)
        outbox.put("activity_start")  # over the reply still coming
        for _ in range(10):  # a second of the question, held, goes out at once
            outbox.put("audio", ROOM_SOUND)
        # The press cut the reply short: interrupted, turnComplete, then a new handle.
        await until(lambda: any(isinstance(e, TurnComplete) for e in events), within=10)
        await asyncio.sleep(0.2)
        await talk.speak(10, ROOM_SOUND)  # a second more on the first connection
        await server.send_go_away("0.5s")  # less than the switch margin: at once
        await until(lambda: any(isinstance(e, Reconnected) for e in events), within=10)
        await talk.speak(10, ROOM_SOUND)  # and one on the second
        outbox.put("activity_end")
        await until(lambda: len(heard_ms(server)) == 1, within=10)
    assert heard_ms(server) == [pytest.approx(3000, abs=WITHIN_MS)], "the question heard whole"


async def test_a_press_through_a_flapping_service_is_heard_once_whole_and_paced(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A press held while the service drops the connection every second: the question is
    heard once and whole, each connection carries at most the press so far, and the audio
    sent again does not make a connection count as proved (the backoff grows)."""
    caplog.set_level(logging.INFO, logger="device.live.session")
    press_s = 8.0
    async with talking(server, hold_s=20) as talk:
        outbox, events = talk.outbox, talk.events
        await talk.first_turn(server)
        outbox.put("activity_start")
        loop = asyncio.get_running_loop()
        started = loop.time()
        next_drop = started + 1.0
        chunks = int(press_s / CHUNK_S)
        for _ in range(chunks):
            outbox.put("audio", CHUNK)
            await asyncio.sleep(CHUNK_S)
            if loop.time() >= next_drop:
                server.drop()
                next_drop = loop.time() + 1.0
        outbox.put("activity_end")
        await until(lambda: len(heard_ms(server)) == 1, within=30)
    reconnects = sum(isinstance(e, Reconnected) for e in events)
    waits = [
        float(m.group(1))
        for r in caplog.records
        if (m := re.search(r"reconnecting in ([\d.]+) s", r.getMessage()))
    ]
    per_conn = [len(server.audio_in(c.id)) for c in server.log.connections()]
    assert reconnects >= 2
    assert heard_ms(server) == [pytest.approx(press_s * 1000, abs=150)], "heard once, whole"
    assert max(per_conn) <= len(CHUNK) * chunks, "no connection carries more than the press"
    # The first drop follows a connection that carried the "hello" turn: at once. Every
    # later one waited: the audio sent again did not prove a connection.
    assert len(waits) == reconnects - 1, "no reconnect during the press counted as proved"


# ---- a tool at work when the service moves the conversation -----------------------------


def slow_tool(gate: Gate) -> ToolBox:
    """The box's tools with only `slow` enabled: each call waits for `gate` to open."""
    return ToolBox(ToolsConfig(enabled=("slow",)), FakeActions(), registry=gated_tools(gate))


def responses_on(server: LiveServer) -> list[tuple[int, str]]:
    """(connection, call id) of every function response the server received."""
    return [
        (entry.conn, response["id"])
        for entry in server.entries(direction="in") if entry.kind == "tool_response"
        for response in (entry.raw or {})["tool_response"]["functionResponses"]
    ]


async def test_a_go_away_while_a_tool_works_waits_for_its_answer_and_the_reply(
    server: LiveServer, gate: Gate,
) -> None:
    """The answer goes out on the connection that asked, the reply is heard, then the box
    moves: nothing of the call reaches the next connection."""
    call_id = server.queue_tool_call("slow")
    async with talking(server, tools=slow_tool(gate)) as talk:
        talk.ask()
        await gate.entered()
        await server.send_go_away("20s")
        await asyncio.sleep(0.3)
        gate.opened.set()
        await until(lambda: any(isinstance(e, Reconnected) for e in talk.events), within=10)
        replies = [e for e in talk.events if isinstance(e, ReplyAudio)]
    assert replies, "the reply to the tool's answer was not heard"
    assert responses_on(server) == [(1, call_id)]
    assert not any(isinstance(e, Reconnecting) for e in talk.events)


async def test_a_go_away_deadline_while_a_tool_works_drops_its_answer_with_a_line(
    server: LiveServer, gate: Gate, caplog: pytest.LogCaptureFixture,
) -> None:
    """The deadline comes first: the call is dropped with the connection (its answer on the
    next one would be to an id that session does not know: a 1007 that ends it), the
    journal says so, and the turn ends with the error beep's event."""
    caplog.set_level(logging.INFO)
    server.queue_tool_call("slow")
    async with talking(server, tools=slow_tool(gate)) as talk:
        talk.ask()
        await gate.entered()
        await server.send_go_away("0.5s")
        await until(lambda: any(isinstance(e, Reconnected) for e in talk.events), within=10)
        gate.opened.set()
        await asyncio.sleep(0.3)
        talk.outbox.put("text", "and now?")
        await until(lambda: sum(isinstance(e, TurnComplete) for e in talk.events) >= 1,
                    within=10)
    assert responses_on(server) == []
    lost = [e for e in talk.events if isinstance(e, Reconnecting)]
    assert lost and lost[0].reply_lost, talk.events
    ended = [r for r in caplog.records if getattr(r, "LIVE_TOOL_RESULT", None) == "ended"]
    assert len(ended) == 1


#: Calls past the bound of calls at once, answered busy in one message.
REFUSED = 4


async def test_a_withdrawal_crossing_the_busy_answer_resumes_the_conversation(
    server: LiveServer, gate: Gate, caplog: pytest.LogCaptureFixture,
) -> None:
    """The model calls more tools at once than the box runs; the box answers the rest busy
    in one message. The person talks over it (hands-free): the service withdraws the calls
    it still awaits, those answered busy among them, as the busy answer is on its way. It
    refuses that answer (1007, ids it no longer knows): the race a resume mends. It ended
    the conversation instead, the journal blaming "a setting or a message refused"."""
    caplog.set_level(logging.INFO)
    async with talking(server, tools=slow_tool(gate)) as talk:
        await talk.first_turn(server)  # a handle to resume with
        service = server.connection()
        ids = [f"flood-{n}" for n in range(TOOL_CALLS_LIMIT + REFUSED)]
        service.pending_tools.update({call_id: Utterance("flood") for call_id in ids})
        service.ws.transport.pause_reading()  # what the box answers crosses what follows
        calls = [{"id": call_id, "name": "slow", "args": {}} for call_id in ids]
        await service.send("tool_call", {"toolCall": {"functionCalls": calls}})
        await gate.entered(TOOL_THREADS_LIMIT)  # the rest of those run answered at once
        await until(lambda: any("answered busy" in r.getMessage() for r in caplog.records))
        await asyncio.sleep(0.3)  # the busy answer on its way
        # What the service still awaits as the person talks: the calls at work and those
        # whose busy answer it has not read yet (it read the tools' quick answers).
        await service.cancel_tool_calls(ids[:TOOL_THREADS_LIMIT] + ids[-REFUSED:])
        service.ws.transport.resume_reading()
        await until(lambda: any(isinstance(e, Reconnected | ConnectionLost)
                                for e in talk.events), within=10)
        lost = [e for e in talk.events if isinstance(e, ConnectionLost)]
        assert not lost, lost
        gate.opened.set()
        talk.outbox.put("text", "and now?")
        await until(lambda: "and now?" in service.state.history, within=10)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("connection")]
    assert any("crossed the service's withdrawal" in line for line in lines), lines
