"""The server's record of every message in both directions, for tests to assert on.

Entries are appended on the server's event loop and may be read from any
thread (``ServerThread`` callers), so the list sits behind a lock and readers
get copies. Timestamps are ``time.monotonic()``: CLOCK_MONOTONIC is shared by
all processes on Linux, so a benchmark can compare them with its own clocks.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Entry:
    """One message: which way, when, on which connection, what kind, its payload."""

    direction: Literal["in", "out"]
    t: float
    conn: int
    kind: str
    data: bytes | None = None  # decoded audio/video bytes
    raw: dict[str, Any] | None = None


@dataclass
class ConnectionRecord:
    """What a test may want to know about one connection (credentials stay out)."""

    id: int
    path: str
    endpoint: str
    headers: dict[str, str]
    auth: str = ""
    setup: dict[str, Any] | None = None
    opened: float = field(default_factory=time.monotonic)
    closed: float | None = None
    close_code: int | None = None


class ServerLog:
    """Thread-safe append-only log with waiters on both sync and async sides."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._entries: list[Entry] = []
        self._connections: dict[int, ConnectionRecord] = {}
        self._changed: asyncio.Event | None = None

    def bind(self) -> None:
        """Attach to the running loop so async waiters can be woken (call on the loop)."""
        self._changed = asyncio.Event()

    def add(self, entry: Entry) -> None:
        """Record an entry (on the server loop)."""
        with self._lock:
            self._entries.append(entry)
            self._lock.notify_all()
        self.touch()

    def add_connection(self, record: ConnectionRecord) -> None:
        """Register a connection (on the server loop)."""
        with self._lock:
            self._connections[record.id] = record
            self._lock.notify_all()
        self.touch()

    def touch(self) -> None:
        """Wake waiters after a change that is not an entry (a setup, a close)."""
        with self._lock:
            self._lock.notify_all()
        if self._changed is not None:
            self._changed.set()

    def entries(self, conn: int | None = None, direction: str | None = None) -> list[Entry]:
        """A copy of the entries, optionally for one connection and one direction."""
        with self._lock:
            items = list(self._entries)
        return [
            e for e in items
            if (conn is None or e.conn == conn) and (direction is None or e.direction == direction)
        ]

    def since(self, start: int) -> tuple[list[Entry], int]:
        """The entries from the `start`-th on, and where the next read starts: a reader of a
        long run takes only what is new instead of copying the whole log each time."""
        with self._lock:
            return self._entries[start:], len(self._entries)

    def connections(self) -> list[ConnectionRecord]:
        """Connections in the order they opened."""
        with self._lock:
            return list(self._connections.values())

    def kinds(self, conn: int | None = None, direction: str | None = None) -> list[str]:
        """The kinds of the entries, in order."""
        return [e.kind for e in self.entries(conn, direction)]

    def audio_in(self, conn: int | None = None) -> bytes:
        """All PCM received, concatenated."""
        return b"".join(e.data or b"" for e in self.entries(conn, "in") if e.kind == "audio")

    def audio_out(self, conn: int | None = None) -> bytes:
        """All reply PCM sent, concatenated."""
        return b"".join(e.data or b"" for e in self.entries(conn, "out") if e.kind == "audio")

    def activity_audio(self, conn: int | None = None, after: float = 0.0) -> bytes:
        """The microphone audio inside the first activity that starts at or after `after`,
        as the session that answers it has it.

        From activityStart to activityEnd; across a switch to a new connection too, where
        the device reopens the activity: a session resumed there has only what came on
        it (a handle covers nothing sent after it), so its audio counts from there.
        """
        chunks: list[bytes] = []
        inside, on = False, None
        for e in self.entries(conn, "in"):
            if e.t < after:
                continue
            if e.kind == "activity_start":
                if inside and e.conn != on:
                    chunks = []
                inside, on = True, e.conn
            elif e.kind == "activity_end" and inside:
                break
            elif e.kind == "audio" and inside and e.data:
                chunks.append(e.data)
        return b"".join(chunks)

    async def wait_for(
        self, predicate: Callable[[], bool], timeout: float  # noqa: ASYNC109
    ) -> None:
        """Wait on the server loop until ``predicate()`` holds; TimeoutError otherwise."""
        assert self._changed is not None, "log not bound to a running server"
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def wait_for_sync(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Block a foreign thread until ``predicate()`` holds; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"condition not met within {timeout} s")
                self._lock.wait(left)
