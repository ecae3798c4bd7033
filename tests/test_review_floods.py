"""Floods from the service, and what of them the person still hears: review tests."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from google.genai import types
from google.genai._live_converters import _LiveServerMessage_from_mldev
from helpers import until
from speech import SPEAKER_RATE, assert_clean, chirp, reply_heard, speak_turn, turns_done
from test_states import run
from websockets.protocol import State as WsState
from wire import config_for

from device import states as s
from device.live.inbound import AudioOnly
from device.live.read_ahead import ReadAhead
from device.live.session import LiveLink
from device.live.websocket import UNSENT_HELD_LIMIT, websocket_of
from device.live.wire import REPLY_RATE, SAMPLE_BYTES
from device.outbox import Outbox
from device.states import (
    Machine,
    Reconnected,
    Reconnecting,
    ReplyAudio,
    SetupComplete,
    State,
    TurnComplete,
)
from rig.loopback import PulseLoopback
from rig.server.server import LiveServer

AHEAD_S = 4.0  # what the speaker holds before the link waits for it (Playback's AHEAD_S)


class Speaker:
    """The speaker as the link sees it: reply audio fed through the events, played only
    when the test says so."""

    def __init__(self) -> None:
        self.fed = 0  # bytes of reply audio the person hears (or will)
        self.played = 0
        self._changed = asyncio.Event()

    def feed(self, pcm: bytes) -> None:
        self.fed += len(pcm)

    def play_out(self) -> None:
        self.played = self.fed
        self._changed.set()

    def has_room(self) -> bool:
        return self.fed - self.played < AHEAD_S * REPLY_RATE * SAMPLE_BYTES

    async def wait_for_room(self) -> None:
        while not self.has_room():
            self._changed.clear()
            await self._changed.wait()

    @property
    def seconds(self) -> float:
        return self.fed / SAMPLE_BYTES / REPLY_RATE


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LiveServer]:
    async with LiveServer(pace=0, reply_seconds=20.0) as live:
        monkeypatch.setenv("SSL_CERT_FILE", live.ca_file)
        yield live


async def test_a_reply_received_whole_before_a_drop_is_still_heard_to_its_end(
    server: LiveServer,
) -> None:
    """The service sends a 20 s reply at once (as it does, far faster than it plays), then
    the connection drops. All of it, its turnComplete too, had arrived: 4 s were in the
    speaker, 16 s waited in the read-ahead. Those 16 s went with the connection, without a
    word in the journal: the person heard the reply stop mid-sentence. A goAway carries them
    on to the next connection; a drop must too (or at least say it dropped them)."""
    speaker = Speaker()
    events: list[Any] = []

    def on_event(event: Any) -> None:
        events.append(event)
        if isinstance(event, ReplyAudio) and not event.talked_over:
            speaker.feed(event.pcm)

    outbox = Outbox(5)
    link = LiveLink(config_for(server), outbox, on_event, lambda *_: None, speaker=speaker)
    link.open(1)
    try:
        await until(lambda: any(isinstance(e, SetupComplete) for e in events), within=10)
        outbox.put("text", "tell me a long story")
        # The whole reply is on the wire, its end read into the box: then the drop.
        await server.wait_for(lambda: "turn_complete" in server.kinds(direction="out"), 10)
        await until(lambda: speaker.seconds >= AHEAD_S - 0.5, within=10)
        await asyncio.sleep(0.5)
        server.drop()
        await until(lambda: any(isinstance(e, Reconnected) for e in events), within=15)
        for _ in range(20):  # the speaker plays on; what waited comes as it has room
            speaker.play_out()
            await asyncio.sleep(0.05)
    finally:
        await link.close()
    assert speaker.seconds == pytest.approx(20.0, abs=0.1), (
        f"{speaker.seconds:.1f} s of a 20 s reply received whole reached the speaker"
    )
    assert any(isinstance(e, TurnComplete) and not e.talked_over for e in events)


def test_a_reply_carried_across_a_drop_is_one_turn_though_the_speaker_ran_dry_meanwhile() -> None:
    """The drop's reply came whole and goes on from the next connection (reply_lost=False
    while it plays): the speaker running out before that connection hands on the rest is
    a pause in the reply, not its end. Taken as its end, the box went idle mid-sentence and
    took the rest for a reply of its own."""
    reply = s.ReplyAudio(session=1, pcm=b"\x01\x00")
    m, _, _ = run(Machine(), s.Pressed(), s.SetupComplete(session=1), s.Released(), reply)
    carried = s.Reconnecting(session=1, reason="dropped", reply_lost=False)
    m, seen, _ = run(m, carried, s.PlaybackDrained(), s.Reconnected(session=1), reply)
    assert seen == [State.SPEAKING] * 4
    m, seen, _ = run(m, s.TurnComplete(session=1), s.PlaybackDrained())
    assert seen == [State.SPEAKING, State.IDLE]


def test_on_the_daemon_a_reply_sent_whole_plays_to_its_end_across_a_drop(
    loopback: PulseLoopback, make_rig: Any
) -> None:
    """The same on the real daemon and its loopback speaker: a 20 s reply sent at once, the
    TCP connection dropped a second later; the person hears all 20 s, then talks on."""
    config = {"audio": {"earcons": False}, "live": {"keepalive_s": 1, "dead_after_s": 4}}
    server, daemon = make_rig(config, reply_seconds=0.3)
    speak_turn(loopback, daemon, chirp(0.3))  # a handle to resume with
    daemon.wait_until(turns_done(1), 20, "turn 1 to end")
    assert server.server is not None
    server.server.config.pace, server.server.config.reply_seconds = 0, 20.0
    recorder = loopback.record(SPEAKER_RATE)
    recorder.wait_started()
    speak_turn(loopback, daemon, chirp(0.3))
    server.wait_for(lambda: server.log.kinds(direction="out").count("turn_complete") >= 2, 10)
    daemon.wait_until(lambda s: s["state"] == "speaking", 10, "the reply")
    time.sleep(1.0)
    server.call(server.server.drop)
    daemon.wait_until(turns_done(2), 40, "the reply to finish")
    time.sleep(0.3)
    reply_heard(recorder.stop(), turn=2, seconds=20.0)
    server.server.config.reply_seconds = 0.3
    speak_turn(loopback, daemon, chirp(0.3))
    daemon.wait_until(turns_done(3), 20, "turn 3 to end")
    assert len(server.log.connections()) == 2
    assert_clean(daemon, server)


async def test_a_message_nested_too_deeply_is_named_undecodable_not_a_bug_of_the_box(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A frame of a thousand nested arrays (a few kilobytes, well under max_size) is more
    than Python's JSON decoder takes: the connection ends, as for any frame that cannot be
    read. The journal said LIVE_FAILURE=other and "RecursionError: maximum recursion depth
    exceeded while decoding a JSON array from a unicode string", which reads as the box's
    own bug, and `LIVE_FAILURE=undecodable` (README) did not find it."""
    caplog.set_level(logging.INFO, logger="device.live")
    events: list[Any] = []
    link = LiveLink(config_for(server), Outbox(5), events.append, lambda *_: None)
    link.open(1)
    try:
        await until(lambda: any(isinstance(e, SetupComplete) for e in events), within=10)
        await server.send_raw('{"serverContent": {"x": ' + "[" * 5000 + "]" * 5000 + "}}")
        await until(lambda: any(isinstance(e, Reconnected) for e in events), within=10)
    finally:
        await link.close()
    (lost,) = [r for r in caplog.records if r.getMessage().startswith("connection lost")]
    assert lost.LIVE_FAILURE == "undecodable"
    assert "RecursionError" not in lost.getMessage() and "nested" in lost.getMessage()


async def test_a_message_the_sdk_reads_waits_behind_a_full_speaker_however_deep_it_is() -> None:
    """A part's function call with arguments 600 arrays deep (the SDK reads it; the same
    message with room in the speaker is handled as any other) behind reply audio waiting for
    a full speaker: weighing it for the bound raised PydanticSerializationError ("Maximum
    serialization depth exceeded"), which ended the connection and the reply with it."""
    deep = {
        "serverContent": {
            "modelTurn": {
                "parts": [
                    {
                        "functionCall": {
                            "name": "f",
                            "args": {"a": json.loads("[" * 600 + "]" * 600)},
                        }
                    }
                ]
            }
        }
    }
    message = types.LiveServerMessage._from_response(
        response=_LiveServerMessage_from_mldev(deep), kwargs={}
    )
    handled: list[Any] = []
    room = asyncio.Event()

    class Full:
        def has_room(self) -> bool:
            return room.is_set()

        async def wait_for_room(self) -> None:
            await room.wait()

    ahead = ReadAhead(handled.append, Full())
    runner = asyncio.create_task(ahead.run())
    try:
        first = AudioOnly(parts=[(b"\x01\x00" * 4800, "audio/pcm;rate=24000")])
        await ahead.take(first)
        await ahead.take(message)
        room.set()
        await until(lambda: len(handled) == 2, within=1)
    finally:
        runner.cancel()
    assert handled == [first, message]


async def test_a_service_that_pings_and_never_reads_cannot_grow_the_box_without_end(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """websockets answers every ping with a pong, written whatever the write side's flow
    control says: a service that sends pings (and now and then a message, so the link looks
    alive) and reads nothing made the box hold every pong in user space, 29 MB after 25 MB of
    pings here and on at the link's speed, past the unit's MemoryMax (256M). The box gives
    up on such a connection (and resumes), saying why."""
    caplog.set_level(logging.INFO, logger="device.live")
    events: list[Any] = []
    link = LiveLink(config_for(server), Outbox(5), events.append, lambda *_: None)
    link.open(1)
    held = 0
    try:
        await until(lambda: any(isinstance(e, SetupComplete) for e in events), within=10)
        connection = link._connection
        assert connection is not None
        ws = server.connection().ws
        ws.transport.pause_reading()  # reads nothing from here on
        alive = json.dumps({"usageMetadata": {"totalTokenCount": 1}})
        for n in range(300_000):
            if any(isinstance(e, Reconnecting) for e in events) or ws.state is not WsState.OPEN:
                break
            ws.protocol.send_ping(n.to_bytes(4, "big") * 31)
            if n % 1000 == 0:
                ws.protocol.send_text(alive.encode())
            ws.send_data()
            if n % 500 == 0:
                await asyncio.sleep(0)
                box = websocket_of(connection.session)
                held = max(held, box.transport.get_write_buffer_size() if box else 0)
        await asyncio.sleep(0.5)
    finally:
        await link.close()
    assert held <= UNSENT_HELD_LIMIT + 2**20, f"{held / 2**20:.0f} MB of pongs held unsent"
    assert any(isinstance(e, Reconnecting) for e in events), "the connection went on"
    (lost,) = [r for r in caplog.records if r.getMessage().startswith("connection lost")]
    assert "reads nothing" in lost.getMessage()
