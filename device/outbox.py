"""One ordered queue for everything the device says to the Live service.

The outbox outlives connections: a press before the connection exists, or
speech during a reconnect, waits here in order and is sent once the next
connection is ready. Audio is bounded in seconds; on overflow the oldest audio
goes first and the loss is counted, so the journal can say so. Push-to-talk turns
waiting are at most one: a press while the last turn's end still waits here
continues that turn.

Camera frames are the exception to the order: one slot holds the newest frame,
and it is sent only when nothing else waits. On a slow link frames are
replaced, never queued, and speech always goes first.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Literal

from device.live.wire import MIC_RATE, SAMPLE_BYTES
from device.logs import Overflow

log = logging.getLogger(__name__)

Kind = Literal["audio", "video", "activity_start", "activity_end", "audio_stream_end", "text"]

BYTES_PER_SECOND = MIC_RATE * SAMPLE_BYTES
#: Text turns (`ctl text`) that may wait to be sent; the next is refused until one goes.
TEXTS_LIMIT = 8


@dataclass(slots=True)
class Item:
    kind: Kind
    data: bytes | str | None = None
    #: Set as it is taken: the outbox's clears (and, for a frame, dropped frames) so far.
    #: Put back after one more (`push_front`), it belonged to what was dropped.
    taken_at: int = 0


class Outbox:
    """FIFO with a bound on held audio and one newest-wins slot for video frames."""

    def __init__(self, hold_s: float) -> None:
        self._items: deque[Item] = deque()
        self._video: Item | None = None
        self._audio_bytes = 0
        self._limit = int(hold_s * BYTES_PER_SECOND)
        self._ready = asyncio.Event()
        self._cleared = 0  # clear() calls so far
        self._frames_dropped = 0  # clear() and drop_frame() calls so far
        self.texts = 0  # text turns waiting

    def put(self, kind: Kind, data: bytes | str | None = None) -> int:
        """Queue one item; returns the bytes of old audio dropped to make room (0 normally)."""
        dropped = 0
        if kind == "video":
            self._video = Item(kind, data)  # an unsent older frame is replaced
        elif kind == "activity_start" and self._items and self._items[-1].kind == "activity_end":
            # Pressed again before the last turn went out (connecting, reconnecting, a slow
            # link): the two are one turn to the service. A button mashed for as long as a
            # reconnect lasts queued a turn per press, and each was answered in turn.
            self._items.pop()
        else:
            self._items.append(Item(kind, data))
            self._count(self._items[-1], 1)
            if kind == "audio":
                dropped = self._trim_audio()
        self._ready.set()
        return dropped

    def _count(self, item: Item, sign: int) -> None:
        """Keep the totals the bounds look at as `item` comes (+1) or goes (-1)."""
        if item.kind == "audio" and isinstance(item.data, bytes):
            self._audio_bytes += sign * len(item.data)
        elif item.kind == "text":
            self.texts += sign

    def _trim_audio(self) -> int:
        dropped = 0
        while self._audio_bytes > self._limit:
            at, oldest = next((n, i) for n, i in enumerate(self._items) if i.kind == "audio")
            del self._items[at]
            self._count(oldest, -1)
            assert isinstance(oldest.data, bytes)
            dropped += len(oldest.data)
            # The pauses between utterances dropped whole are one: a person talking in
            # bursts through a long outage left a marker of each outside the bound.
            if 0 < at < len(self._items) and (
                self._items[at - 1].kind == self._items[at].kind == "audio_stream_end"
            ):
                del self._items[at]
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
            video.taken_at = self._frames_dropped
            return video
        item = self._items.popleft()
        self._count(item, -1)
        item.taken_at = self._cleared
        return item

    def push_front(self, item: Item) -> None:
        """Put back an item a dead connection failed to send, so it goes first next time.

        Not one taken before the outbox was cleared (the session it was for is over: it
        was on its way as the session closed, and the next session must not send it) or,
        for a frame, dropped (the person let go)."""
        dropped = self._frames_dropped if item.kind == "video" else self._cleared
        if item.taken_at != dropped:
            return
        if item.kind == "video":
            self._video = self._video or item  # a newer frame, if any, still wins
        else:
            self._items.appendleft(item)
            self._count(item, 1)
        self._ready.set()

    def drop_frame(self) -> None:
        """Forget an unsent frame: the moment it showed is over (the person let go)."""
        self._video = None
        self._frames_dropped += 1

    def clear(self) -> None:
        self._cleared += 1
        self._frames_dropped += 1
        self._items.clear()
        self._video = None
        self._audio_bytes = 0
        self.texts = 0

    def __len__(self) -> int:
        return len(self._items) + (self._video is not None)

    @property
    def held_ms(self) -> float:
        return self._audio_bytes * 1000 / BYTES_PER_SECOND


class TextsWaiting:
    """The bound on text turns (`ctl text`) waiting to be sent: those in the outbox, and
    those handed to the state machine that it has not yet taken (a client may send many
    lines before the machine runs)."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox
        self._posted = 0
        self._over = Overflow(log, "texts")

    def admit(self) -> str | None:
        """Count one more text on its way, or say why it is refused (past TEXTS_LIMIT)."""
        if self._outbox.texts + self._posted >= TEXTS_LIMIT:
            self._over.hit("text turn refused: %d are waiting already", TEXTS_LIMIT)
            return (
                f"busy: {TEXTS_LIMIT} text turns are waiting to be sent already; "
                "try again once the box is connected"
            )
        self._over.ended()
        self._posted += 1
        return None

    def taken(self) -> None:
        """The state machine took a text turn (into the outbox, or refused it itself)."""
        self._posted -= 1
