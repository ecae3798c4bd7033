"""What the service may send has a bound: odd messages, found by generating them, fed
to the box's own handling of the service's messages."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from helpers import until
from wire import config_for

from device.live.session import LiveLink
from device.live.wire import REPLY_RATE, SAMPLE_BYTES
from device.outbox import Outbox
from device.states import Reconnected, ReplyAudio, SetupComplete, TurnComplete
from rig.server.server import LiveServer

AHEAD_S = 1.0  # what the speaker holds before the link waits for it


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LiveServer]:
    async with LiveServer(pace=0, reply_seconds=0.2) as live:
        monkeypatch.setenv("SSL_CERT_FILE", live.ca_file)
        yield live


class Speaker:
    """The speaker as the link sees it: the reply audio it was given, kept; played out only
    when the test says so."""

    def __init__(self) -> None:
        self.heard = bytearray()
        self.played = 0
        self._changed = asyncio.Event()

    def feed(self, pcm: bytes) -> None:
        self.heard += pcm

    def play_out(self) -> None:
        self.played = len(self.heard)
        self._changed.set()

    def has_room(self) -> bool:
        return len(self.heard) - self.played < AHEAD_S * REPLY_RATE * SAMPLE_BYTES

    async def wait_for_room(self) -> None:
        while not self.has_room():
            self._changed.clear()
            await self._changed.wait()


def reply_part(pcm: bytes) -> str:
    blob = {"mimeType": "audio/pcm;rate=24000", "data": base64.b64encode(pcm).decode()}
    return json.dumps({"serverContent": {"modelTurn": {"parts": [{"inlineData": blob}]}}})


def ramp(samples: int) -> bytes:
    """A sound whose every sample differs from its neighbours: a shift shows."""
    return b"".join((n % 30000).to_bytes(2, "little", signed=True) for n in range(samples))


async def test_a_sample_split_across_a_connection_switch_is_heard_whole_not_as_noise(
    server: LiveServer,
) -> None:
    """A reply part that ends in the middle of a sample keeps its odd byte for the next
    part. A reply received whole plays on from the next connection (a drop, a goAway):
    the rest of it went to a new decoder without that byte, and every sample after it
    was its neighbours' bytes, full-scale noise to the reply's end."""
    speaker = Speaker()
    events: list[Any] = []

    def on_event(event: Any) -> None:
        events.append(event)
        if isinstance(event, ReplyAudio) and not event.talked_over:
            speaker.feed(event.pcm)

    sound = ramp(round(1.5 * REPLY_RATE))
    split = round(AHEAD_S * REPLY_RATE) * SAMPLE_BYTES + 1  # the speaker full, a byte over
    link = LiveLink(config_for(server), Outbox(5), on_event, lambda *_: None, speaker=speaker)
    link.open(1)
    try:
        await until(lambda: any(isinstance(e, SetupComplete) for e in events), within=10)
        for frame in (reply_part(sound[:split]), reply_part(sound[split:]),
                      json.dumps({"serverContent": {"turnComplete": True}})):  # fmt: skip
            await server.send_raw(frame)
        connection = link._connection
        assert connection is not None
        await until(lambda: len(connection.unhandled()) == 2, within=10)  # the rest waits
        server.drop()
        await until(lambda: any(isinstance(e, Reconnected) for e in events), within=10)
        speaker.play_out()
        await until(lambda: any(isinstance(e, TurnComplete) for e in events), within=10)
    finally:
        await link.close()
    assert bytes(speaker.heard) == sound, "the rest of the reply was shifted by a byte: noise"
