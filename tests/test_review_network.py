"""Review: what a misbehaving service can do to a box left alone, through the local server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from wire import config_for

from device.live.session import LiveLink
from device.outbox import Outbox
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
