"""The service's messages off the session's WebSocket, reply audio without the SDK's models.

The SDK builds pydantic models for every message it receives (a converted dict,
stripped of unknown fields, then validated, five models deep for a piece of
audio): 0.11 ms for 40 ms of audio here, about ten times that on a Pi Zero, and
the Live API sends its reply audio in tens of messages a second. A message that
is nothing but reply audio (`serverContent.modelTurn.parts[].inlineData`) comes
out of here as `AudioOnly`, its fields checked by hand: 0.03 ms. Every other message,
and audio in any other shape, goes through the SDK's own `AsyncSession._receive()`,
handed the bytes already read, so it reads exactly as `session.receive()` gives it;
a closed connection raises the SDK's error for its close code the same way.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from google.genai import types
from google.genai.live import AsyncSession
from websockets.exceptions import ConnectionClosed

from device.live.errors import closed_by_the_box

#: Objects, lists and other values in lists, in a message the SDK is given. The SDK
#: makes a pydantic model of each (about 10 us and 0.7 KB here, ten times as long on a Pi
#: Zero): one frame under websockets' 1 MiB of 350,000 empty parts (or zeros) took 3.4 s
#: of the event loop and 290 MB, past the unit's MemoryMax. A real message has tens; a
#: flood of 20,000 tool calls in one is still answered "busy". At the bound: 0.3 s and
#: 40 MB here.
ITEMS_LIMIT = 32768
#: base64's URL-safe alphabet (the SDK writes it, and accepts both) to the standard one.
_URL_SAFE = bytes.maketrans(b"-_", b"+/")


@dataclass(frozen=True)
class AudioOnly:
    """A message of reply audio alone: (data, MIME type) per part, in order."""

    parts: list[tuple[bytes, str]]
    role: str | None = None


def fast_path_possible() -> bool:
    """The SDK still has `AsyncSession._receive()`, which the other messages go through."""
    return callable(getattr(AsyncSession, "_receive", None))


async def messages(
    session: AsyncSession, ws: Any
) -> AsyncIterator[types.LiveServerMessage | AudioOnly]:
    """Every message of `session` in order, `ws` its WebSocket (None: the SDK reads them
    all), until the connection ends with the SDK's error."""
    client = getattr(session, "_api_client", None)
    through_sdk = ws is None or client is None or not fast_path_possible()
    while through_sdk:
        async for message in session.receive():  # it stops at each turn's end
            yield message
    while True:
        try:
            raw = await ws.recv(decode=False)
        except ConnectionClosed as closed:
            if closed_by_the_box(closed):
                raise  # as it is: the SDK would make it 1006, the network's
            await session._receive()  # reads the close again, raises it as the SDK does
            raise
        try:
            decoded = json.loads(raw)
        except (ValueError, RecursionError):
            decoded = None  # the SDK says what is wrong with it, in its own words
        if (audio := reply_audio(decoded)) is not None:
            yield audio
            continue
        if _over_items_limit(decoded):
            raise TooManyItems(f"over {ITEMS_LIMIT} items in one message")
        yield await _through_sdk(client, raw)


class TooManyItems(ValueError):
    """A message the SDK would take seconds and hundreds of MB to make models of."""


def _over_items_limit(message: object) -> bool:
    """Whether `message` holds more than ITEMS_LIMIT objects, lists and other values in
    lists (the SDK validates each element, a number as a part too, as a model)."""
    count, left = 0, [message]
    while left and count <= ITEMS_LIMIT:
        item = left.pop()
        if isinstance(item, dict):
            count += 1
            left.extend(item.values())
        elif isinstance(item, list):
            count += 1 + sum(not isinstance(element, dict | list) for element in item)
            left.extend(element for element in item if isinstance(element, dict | list))
    return count > ITEMS_LIMIT


def reply_audio(message: Any) -> AudioOnly | None:
    """The message (its JSON decoded), if it is reply audio alone, in a shape the SDK
    reads the same way; None for anything else (the SDK decides what that is)."""
    try:
        content = message["serverContent"]
        turn = content["modelTurn"]
        parts = turn["parts"]
    except (ValueError, TypeError, KeyError):
        return None
    role = turn.get("role")
    if (
        message.keys() != {"serverContent"}
        or content.keys() != {"modelTurn"}
        or not turn.keys() <= {"parts", "role"}
        or not isinstance(role, str | None)
        or not isinstance(parts, list)
        or not parts
    ):
        return None
    blobs = [_blob(part) for part in parts]
    if any(blob is None for blob in blobs):
        return None
    return AudioOnly(_runs([blob for blob in blobs if blob is not None]), role)


def _runs(blobs: list[tuple[bytes, str]]) -> list[tuple[bytes, str]]:
    """Parts of one MIME type in a row joined into one: they play the same either way, and
    a message of 12,000 one-sample parts held 12,000 objects and made as many events."""
    runs: list[tuple[list[bytes], str]] = []
    for data, mime_type in blobs:
        if runs and runs[-1][1] == mime_type:
            runs[-1][0].append(data)
        else:
            runs.append(([data], mime_type))
    return [(b"".join(pieces), mime_type) for pieces, mime_type in runs]


def _blob(part: object) -> tuple[bytes, str] | None:
    """A part that is inline data alone (padded base64 and a MIME type): its bytes and type."""
    if not isinstance(part, dict) or part.keys() != {"inlineData"}:
        return None
    inline = part["inlineData"]
    if not isinstance(inline, dict) or inline.keys() != {"data", "mimeType"}:
        return None
    data, mime_type = inline["data"], inline["mimeType"]
    if not isinstance(data, str) or not isinstance(mime_type, str):
        return None
    try:
        decoded = binascii.a2b_base64(data.encode("ascii").translate(_URL_SAFE), strict_mode=True)
    except (UnicodeEncodeError, binascii.Error):
        return None
    return decoded, mime_type


async def _through_sdk(client: Any, raw: bytes | str) -> types.LiveServerMessage:
    """`raw` made into the SDK's message by the SDK, on a session that reads only it."""
    return await AsyncSession(api_client=client, websocket=_Read(raw))._receive()  # type: ignore[arg-type]


class _Read:
    """A stand-in WebSocket for the SDK's `_receive()`: the one message already read."""

    def __init__(self, raw: bytes | str) -> None:
        self._raw = raw

    async def recv(self, decode: bool | None = None) -> bytes | str:
        return self._raw
