"""The session across connections, in-process: a fake client stands in for the SDK's."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from device.config import Config
from device.live.session import LiveLink
from device.outbox import Outbox


class ClosingSession:
    """A connection the service closes as soon as `closing` is set."""

    session_id = "s"

    def __init__(self, closing: asyncio.Event) -> None:
        self._closing = closing

    async def receive(self) -> AsyncIterator[Any]:
        await self._closing.wait()
        raise ConnectionError("closed by the service")
        yield  # an async generator, as the SDK's

    async def close(self) -> None: ...


class Client:
    """`client.aio.live.connect(...)`, counting the connections it opens."""

    def __init__(self, closing: asyncio.Event) -> None:
        self.aio = self.live = self
        self.closing = closing
        self.connections = 0
        self.connected = asyncio.Event()

    @contextlib.asynccontextmanager
    async def connect(self, **_: Any) -> AsyncIterator[ClosingSession]:
        self.connections += 1
        self.connected.set()
        yield ClosingSession(self.closing)


async def test_a_close_as_the_service_ends_the_connection_ends_the_session() -> None:
    """SIGTERM closes the link just as the service's close ends the connection: Python
    3.11's TaskGroup then loses the cancellation, and the session went on reconnecting
    while close() waited for it, so the daemon ignored SIGTERM."""
    closing = asyncio.Event()
    client = Client(closing)
    link = LiveLink(Config(), Outbox(5), on_event=lambda e: None, on_sent=lambda i, t: None)
    link._client = client  # type: ignore[assignment]  # prepare() keeps a client it has
    link.open(1)
    await client.connected.wait()
    await asyncio.sleep(0.05)  # the connection's tasks are all waiting
    closing.set()  # the service's close arrives...
    async with asyncio.timeout(5):
        await link.close()  # ...as the shutdown does
    assert not link.is_open
    assert client.connections == 1, "the session reconnected while it was being closed"
