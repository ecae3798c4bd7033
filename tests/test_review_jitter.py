"""A jittery home link, on the way up: the socket stalls while the person talks."""

from __future__ import annotations

import asyncio

from helpers import until
from test_go_away import CHUNK_S, heard_ms, server, talking

from device.live.wire import MIC_RATE
from rig.server.server import LiveServer

__all__ = ["server"]  # the fixture, shared with test_go_away


async def test_speech_through_a_short_stall_of_the_link_reaches_the_service_whole_in_order(
    server: LiveServer,
) -> None:
    """A busy Wi-Fi holds the socket 1.5 s in the middle of a push-to-talk question: what
    the person said meanwhile waits in the box and goes out after it, every chunk once and
    in order, on the same connection (no reconnect, no word lost)."""
    chunks = [bytes([i, 0]) * int(MIC_RATE * CHUNK_S) for i in range(1, 31)]
    async with talking(server) as talk:
        await talk.first_turn(server)
        talk.outbox.put("activity_start")
        for i, chunk in enumerate(chunks):
            if i == 5:
                server.stall(1.5)
            talk.outbox.put("audio", chunk)
            await asyncio.sleep(CHUNK_S)
        talk.outbox.put("activity_end")
        await until(lambda: len(heard_ms(server)) == 1, within=10)
    sent = [entry.data for entry in server.entries(direction="in") if entry.kind == "audio"]
    assert sent == chunks
    assert len(server.log.connections()) == 1, "the stall was ridden out, not reconnected"
