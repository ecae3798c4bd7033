"""A service that misbehaves at each moment of a conversation, as a home meets it: how soon
the box notices, what it shows and says, and whether the person's words survive."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
from helpers import journal_lines, until
from test_go_away import heard_ms
from wire import config_for

from device import logs
from device.live.session import LiveLink
from device.live.setup import CLOSE_TIMEOUT_S
from device.outbox import Outbox
from device.states import ConnectFailed, Event, ReplyAudio, SetupComplete, TurnComplete
from rig.server.server import LiveServer

CHUNK = b"\x05\x00" * 1600  # 100 ms of the person's voice


@pytest.fixture
async def slow_setups(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LiveServer]:
    """A service that takes 3 s to answer a setup."""
    async with LiveServer(pace=0, reply_seconds=0.2, setup_delay=3.0) as live:
        monkeypatch.setenv("SSL_CERT_FILE", live.ca_file)
        yield live


async def test_a_close_during_the_setup_from_a_service_that_no_longer_reads_is_seen_at_once(
    slow_setups: LiveServer,
) -> None:
    """The press: the setup goes out, and the service, in trouble, closes with 1011 and
    reads no more (the box's answer to its close is never read, the socket stays open).
    The box saw nothing until connect_timeout_s (5 s), blamed "no answer from the Live API
    in time", and failed the press (the error state) with the person's words lost: a
    close seen at once is tried once more, and the question answered."""
    server = slow_setups
    events: list[Event] = []
    outbox = Outbox(hold_s=8)
    link = LiveLink(config_for(server), outbox, events.append, lambda _item, _t: None)
    outbox.put("activity_start")
    for _ in range(10):
        outbox.put("audio", CHUNK)
    outbox.put("activity_end")
    with journal_lines("device.live") as journal:
        link.open(1)
        try:
            await server.wait_for(lambda: any(c.setup for c in server.log.connections()), 5)
            server.config.setup_delay = 0.0  # the next setup is answered at once
            server.stall()
            closing = time.monotonic()
            closed = asyncio.ensure_future(server.close_all(1011, "Internal error"))
            ended = (TurnComplete, ConnectFailed)
            await until(lambda: any(isinstance(e, ended) for e in events), within=15)
            noticed = time.monotonic() - closing
        finally:
            server.resume_all()
            await closed
            await link.close()
    said = " | ".join(record["MESSAGE"] for record in journal.records)
    assert noticed < CLOSE_TIMEOUT_S + 1.0, f"noticed after {noticed:.1f} s: {said}"
    assert "1011" in said, said
    assert not any(isinstance(e, ConnectFailed) for e in events), said
    assert heard_ms(server) == [1000], "the question reached the next connection whole"


async def test_a_service_counting_down_its_go_away_says_so_in_a_line_not_one_per_message(
    server: LiveServer,
) -> None:
    """A service in trouble that repeats its goAway, each with a little less time left (a
    countdown by hundredths of a second): the journal said "the service will close this
    connection in N s" for every one of them, 200 lines at once (the journal's burst
    budget for one part), then 5 a second, burying the lines around them."""
    events: list[Event] = []
    outbox = Outbox(hold_s=8)
    link = LiveLink(config_for(server), outbox, events.append, lambda _item, _t: None)
    with journal_lines("device.live", filters=[logs.LineBudget()]) as journal:
        link.open(1)
        try:
            await until(lambda: SetupComplete(session=1) in events, within=10)
            outbox.put("text", "hello")
            await until(lambda: TurnComplete(session=1) in events, within=10)
            conn = server.connection()
            for left in range(6000, 5000, -1):
                await conn.send("go_away", {"goAway": {"timeLeft": f"{left / 100:g}s"}})
            outbox.put("text", "still there?")
            await until(lambda: events.count(TurnComplete(session=1)) >= 2, within=10)
        finally:
            await link.close()
    said = [r["MESSAGE"] for r in journal.records if "will close this connection" in r["MESSAGE"]]
    assert len(said) <= 2, f"{len(said)} lines: {said[:3]}"


async def test_two_stray_interrupted_after_a_whole_reply_do_not_silence_the_next_answer(
    server: LiveServer,
) -> None:
    """A reply heard whole, then the service says `interrupted` twice with nothing between
    (a service in trouble, one that repeats itself): the person's next question was
    answered in silence, its reply taken for the rest of one cut short (the journal:
    "model said (cut short)"), though nothing was playing and nothing was cut."""
    events: list[Event] = []
    outbox = Outbox(hold_s=8)
    link = LiveLink(config_for(server), outbox, events.append, lambda _item, _t: None)
    link.open(1)
    try:
        await until(lambda: SetupComplete(session=1) in events, within=10)
        outbox.put("text", "hello")
        await until(lambda: TurnComplete(session=1) in events, within=10)
        for _ in range(2):
            await server.send_raw(json.dumps({"serverContent": {"interrupted": True}}))
        before = len(events)
        outbox.put("text", "what time is it?")
        await until(lambda: any(isinstance(e, TurnComplete) for e in events[before:]), within=10)
    finally:
        await link.close()
    replies = [e for e in events[before:] if isinstance(e, ReplyAudio)]
    assert replies and not any(e.talked_over for e in replies), events[before:]
