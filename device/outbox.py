"""One ordered queue for everything the device says to the Live service.

The outbox outlives connections: a press before the connection exists, or
speech during a reconnect, waits here in order and is sent once the next
connection is ready. Audio is bounded in seconds; on overflow the oldest audio
goes first and the loss is counted, so the journal can say so.

Camera frames are the exception to the order: one slot holds the newest frame,
and it is sent only when nothing else waits. On a slow link frames are
replaced, never queued, and speech always goes first.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from device.live.wire import MIC_RATE, SAMPLE_BYTES

Kind = Literal["audio", "video", "activity_start", "activity_end", "audio_stream_end", "text"]

BYTES_PER_SECOND = MIC_RATE * SAMPLE_BYTES


@dataclass(slots=True)
class Item:
    kind: Kind
    data: bytes | str | None = None
    queued_at: float = field(default_factory=time.monotonic)


class Outbox:
    """FIFO with a bound on held audio and one newest-wins slot for video frames."""

    def __init__(self, hold_s: float) -> None:
        self._items: deque[Item] = deque()
        self._video: Item | None = None
        self._audio_bytes = 0
        self._limit = int(hold_s * BYTES_PER_SECOND)
        self._ready = asyncio.Event()
        self.dropped_audio_bytes = 0

    def put(self, kind: Kind, data: bytes | str | None = None) -> int:
        """Queue one item; returns the bytes of old audio dropped to make room (0 normally)."""
        dropped = 0
        if kind == "video":
            self._video = Item(kind, data)  # an unsent older frame is replaced
        else:
            self._items.append(Item(kind, data))
            if kind == "audio" and isinstance(data, bytes):
                self._audio_bytes += len(data)
                dropped = self._trim_audio()
        self._ready.set()
        return dropped

    def _trim_audio(self) -> int:
        dropped = 0
        while self._audio_bytes > self._limit:
            oldest = next(i for i in self._items if i.kind == "audio")
            self._items.remove(oldest)
            assert isinstance(oldest.data, bytes)
            self._audio_bytes -= len(oldest.data)
            dropped += len(oldest.data)
        self.dropped_audio_bytes += dropped
        return dropped

    async def get(self) -> Item:
        """The next item, in order, a frame only when nothing else waits; never polls."""
        while not self:
            self._ready.clear()
            await self._ready.wait()
        return self._pop()

    def get_nowait(self) -> Item | None:
        return self._pop() if self else None

    def _pop(self) -> Item:
        if not self._items:
            video, self._video = self._video, None
            assert video is not None
            return video
        item = self._items.popleft()
        if item.kind == "audio" and isinstance(item.data, bytes):
            self._audio_bytes -= len(item.data)
        return item

    def push_front(self, item: Item) -> None:
        """Put back an item a dead connection failed to send, so it goes first next time."""
        if item.kind == "video":
            self._video = self._video or item  # a newer frame, if any, still wins
        else:
            self._items.appendleft(item)
            if item.kind == "audio" and isinstance(item.data, bytes):
                self._audio_bytes += len(item.data)
        self._ready.set()

    def drop_frame(self) -> None:
        """Forget an unsent frame: the moment it showed is over (the person let go)."""
        self._video = None

    def clear(self) -> None:
        self._items.clear()
        self._video = None
        self._audio_bytes = 0

    def __len__(self) -> int:
        return len(self._items) + (self._video is not None)

    @property
    def held_ms(self) -> float:
        return self._audio_bytes * 1000 / BYTES_PER_SECOND
