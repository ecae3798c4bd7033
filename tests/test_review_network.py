"""Review: what a misbehaving service can do to a box left alone, through the local server."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from helpers import until
from wire import config_for

from device.errors import TEXT_LIMIT
from device.live.session import LiveLink
from device.outbox import Outbox
from device.states import ConnectionLost, Reconnecting, SetupComplete, SpeechHeard
from rig.server.server import LiveServer


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LiveServer]:
    async with LiveServer(pace=0, reply_seconds=0.2) as live:
        monkeypatch.setenv("SSL_CERT_FILE", live.ca_file)
        yield live


async def each_connection(server: LiveServer, frames: list[str], code: int) -> None:
    """On every new connection: send `frames` after setup, then close with `code`."""
    seen: set[int] = set()
    while True:
        for number, connection in list(server._live.items()):
            if number not in seen and connection.is_open:
                seen.add(number)
                for frame in frames:
                    await connection.send_raw(frame)
                await asyncio.sleep(0.05)
                await connection.close(code, "Internal error encountered.")
        await asyncio.sleep(0.005)


BARE_END = json.dumps({"serverContent": {"turnComplete": True}})
BARE_INTERRUPTED = json.dumps({"serverContent": {"interrupted": True}})


@pytest.mark.parametrize(
    "frames", [[BARE_END], [BARE_INTERRUPTED, BARE_END]], ids=["turnComplete", "interrupted"]
)
async def test_a_turn_end_nobody_asked_for_does_not_reset_the_backoff(
    server: LiveServer, frames: list[str]
) -> None:
    """A service that ends every connection after setup is paced (0.5 s, 1 s, 2 s...); one
    that also sends a turnComplete (no turn was asked, no reply came) before each close
    had every connection count as proved: the box reconnected at once, about twelve
    times a second, for as long as the session stayed open, and never gave up."""
    sabotage = asyncio.create_task(each_connection(server, frames, 1011))
    link = LiveLink(config_for(server), Outbox(5), lambda _e: None, lambda *_: None)
    link.open(1)
    try:
        await asyncio.sleep(3.0)
        assert link.connections <= 6, f"{link.connections} connections in 3 s"
    finally:
        sabotage.cancel()
        await link.close()


async def test_a_flood_of_tiny_messages_lets_the_rest_of_the_box_run_between_them(
    server: LiveServer,
) -> None:
    """Thousands of one-letter transcriptions a second: websockets hands over every frame
    it has read without waiting, and the receiver handled them all in a row, the event loop
    held meanwhile (300 ms per burst here, seconds on a Pi Zero): a press, the watchdog's
    heartbeat and SIGTERM waited behind it."""
    ticks = 0
    at_tick: list[int] = []  # the loop's turn each transcription was handled in
    events: list[Any] = []

    def on_event(event: Any) -> None:
        events.append(event)
        if isinstance(event, SpeechHeard):
            at_tick.append(ticks)

    link = LiveLink(config_for(server), Outbox(5), on_event, lambda *_: None)
    link.open(1)
    try:
        await until(lambda: any(isinstance(e, SetupComplete) for e in events), within=10)
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0)

        counting = asyncio.create_task(ticker())
        ws = server.connection().ws
        frame = json.dumps({"serverContent": {"inputTranscription": {"text": "a"}}})
        for _ in range(5000):
            await ws.send(frame)
        await until(lambda: len(at_tick) >= 5000, within=30)
        stop.set()
        await counting
    finally:
        await link.close()
    in_a_row = max(at_tick.count(tick) for tick in set(at_tick))
    assert in_a_row <= 16, f"{in_a_row} messages handled without the loop running anything else"


async def test_an_error_the_service_writes_a_megabyte_of_is_shown_cut(server: LiveServer) -> None:
    """A frame like `{"code": 1008, "message": <800 KB>}` is raised by the SDK as an error
    with that code, and its message became the reason of the error state whole: every
    `ctl status` answered 800 KB, and `ctl text` refused with as much. A close's reason is
    at most 123 bytes; nothing the service writes may grow what the box says."""
    events: list[Any] = []
    link = LiveLink(config_for(server), Outbox(5), events.append, lambda *_: None)
    link.open(1)
    try:
        await until(lambda: any(isinstance(e, SetupComplete) for e in events), within=10)
        await server.send_raw(json.dumps({"code": 1008, "message": "x" * 800_000}))
        await until(lambda: any(isinstance(e, ConnectionLost) for e in events), within=10)
    finally:
        await link.close()
    (lost,) = [e for e in events if isinstance(e, ConnectionLost)]
    assert lost.reason.startswith("the API key, the model name or a setting was refused")
    assert len(lost.reason) <= TEXT_LIMIT + 100, f"a reason of {len(lost.reason)} characters"


async def test_a_frame_over_the_size_limit_is_named_not_blamed_on_the_network(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """websockets ends the connection itself (1009) for a frame over 1 MiB, and the SDK
    raises that as 1006: the journal said "the connection dropped without a goodbye
    (network)", LIVE_FAILURE=closed, LIVE_CLOSE_CODE=1006, and an owner checked the Wi-Fi."""
    caplog.set_level(logging.INFO, logger="device.live")
    events: list[Any] = []
    link = LiveLink(config_for(server), Outbox(5), events.append, lambda *_: None)
    link.open(1)
    try:
        await until(lambda: any(isinstance(e, SetupComplete) for e in events), within=10)
        words = {"outputTranscription": {"text": "w" * 2**20}}
        await server.send_raw(json.dumps({"serverContent": words}))
        await until(lambda: any(isinstance(e, Reconnecting) for e in events), within=10)
    finally:
        await link.close()
    (lost,) = [r for r in caplog.records if r.getMessage().startswith("connection lost")]
    assert "larger than allowed" in lost.getMessage() and "network" not in lost.getMessage()
    assert lost.LIVE_FAILURE == "undecodable"
    assert not hasattr(lost, "LIVE_CLOSE_CODE")
