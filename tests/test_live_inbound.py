"""Messages read off the WebSocket: reply audio read by hand says what the SDK's model says."""

from __future__ import annotations

import asyncio
import base64
import json
from types import SimpleNamespace
from typing import Any

import pytest
from google.genai import errors, types
from google.genai.live import AsyncSession
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close

from device.live.inbound import AudioOnly, messages, reply_audio

PCM = bytes(range(256)) * 8  # every byte value: base64 of it uses "+" and "/"
STD = base64.b64encode(PCM).decode()
URL_SAFE = base64.urlsafe_b64encode(PCM).decode()


def decoded(raw: bytes) -> Any:
    """The message's JSON, as the link decodes it for `reply_audio` (None: not JSON)."""
    try:
        return json.loads(raw)
    except ValueError:
        return None


def audio_part(data: str = STD, mime: str = "audio/pcm;rate=24000") -> dict[str, Any]:
    return {"inlineData": {"mimeType": mime, "data": data}}


STD_BLOB = audio_part()["inlineData"]


def server_content(**content: Any) -> bytes:
    return json.dumps({"serverContent": content}).encode()


REPLY_AUDIO = [
    server_content(modelTurn={"parts": [audio_part()]}),
    server_content(modelTurn={"role": "model", "parts": [audio_part(URL_SAFE)]}),
    server_content(modelTurn={"parts": [audio_part(), audio_part(mime="audio/pcm;rate=16000")]}),
]
FOR_THE_SDK = [
    server_content(modelTurn={"parts": [audio_part(STD.rstrip("=")[:-1])]}),  # unpadded
    server_content(modelTurn={"parts": [audio_part(), {"text": "Hello"}]}),
    server_content(modelTurn={"parts": [audio_part()]}, turnComplete=True),
    server_content(interrupted=True),
    server_content(outputTranscription={"text": "Hello"}),
    json.dumps(
        {"serverContent": {"modelTurn": {"parts": [audio_part()]}}, "usageMetadata": {}}
    ).encode(),
    json.dumps({"goAway": {"timeLeft": "5s"}}).encode(),
    json.dumps({"sessionResumptionUpdate": {"newHandle": "h", "resumable": True}}).encode(),
    server_content(modelTurn={"parts": [{"inlineData": {**STD_BLOB, "displayName": "x"}}]}),
]


class Wire:
    """A WebSocket that hands out these messages, then the service's close."""

    def __init__(self, raws: list[bytes], close: Close) -> None:
        self.raws = list(raws)
        self.close = close

    async def recv(self, decode: bool | None = None) -> bytes:
        if not self.raws:
            raise ConnectionClosed(self.close, None)
        return self.raws.pop(0)


def session_over(raws: list[bytes], vertexai: bool = False) -> tuple[AsyncSession, Wire]:
    wire = Wire(raws, Close(1011, "Deadline expired"))
    client = SimpleNamespace(vertexai=vertexai)
    return AsyncSession(api_client=client, websocket=wire), wire  # type: ignore[arg-type]


def as_the_sdks(audio: AudioOnly) -> types.LiveServerMessage:
    """The SDK's model of a message with these parts and nothing else."""
    parts = [types.Part(inline_data=types.Blob(data=d, mime_type=m)) for d, m in audio.parts]
    content = types.LiveServerContent(model_turn=types.Content(parts=parts, role=audio.role))
    return types.LiveServerMessage(server_content=content)


def comparable(message: types.LiveServerMessage | AudioOnly) -> dict[str, Any]:
    """What a message says, as the SDK's model dumps it."""
    return (as_the_sdks(message) if isinstance(message, AudioOnly) else message).model_dump()


async def read_by_the_sdk(raw: bytes, vertexai: bool = False) -> Any:
    session, _ = session_over([raw], vertexai)
    return await session._receive()


@pytest.mark.parametrize("raw", REPLY_AUDIO)
@pytest.mark.parametrize("vertexai", [False, True])
def test_reply_audio_reads_as_the_sdks_message(raw: bytes, vertexai: bool) -> None:
    audio = reply_audio(decoded(raw))
    assert audio is not None
    assert comparable(audio) == asyncio.run(read_by_the_sdk(raw, vertexai)).model_dump()
    assert audio.parts[0] == (PCM, "audio/pcm;rate=24000")


def test_parts_of_one_type_in_a_row_are_one_piece_of_audio() -> None:
    """12,000 one-sample parts in a message were 12,000 objects held and as many events."""
    samples = [bytes([n % 256, 0]) for n in range(12_000)]
    parts = [audio_part(base64.b64encode(s).decode()) for s in samples]
    parts.append(audio_part(mime="audio/pcm;rate=16000"))
    audio = reply_audio(decoded(server_content(modelTurn={"parts": parts})))
    assert audio is not None
    assert audio.parts == [(b"".join(samples), "audio/pcm;rate=24000"),
                           (PCM, "audio/pcm;rate=16000")]  # fmt: skip


@pytest.mark.parametrize("raw", [*FOR_THE_SDK, b"not json", b"[]", b'{"serverContent": 1}'])
def test_anything_else_is_left_to_the_sdk(raw: bytes) -> None:
    assert reply_audio(decoded(raw)) is None


def test_the_session_reads_every_message_in_order_then_the_close_as_the_sdk_raises_it() -> None:
    raws = [REPLY_AUDIO[0], FOR_THE_SDK[2], REPLY_AUDIO[1], FOR_THE_SDK[4], FOR_THE_SDK[6]]

    async def read_all() -> tuple[list[Any], errors.APIError]:
        session, wire = session_over(raws)
        got = []
        with pytest.raises(errors.APIError) as closed:
            async for message in messages(session, wire):
                got.append(message)
        return got, closed.value

    got, closed = asyncio.run(read_all())
    expected = [asyncio.run(read_by_the_sdk(raw)) for raw in raws]
    assert [type(m) for m in got] == [AudioOnly, types.LiveServerMessage] * 2 + [
        types.LiveServerMessage
    ]
    assert [comparable(m) for m in got] == [m.model_dump() for m in expected]
    with pytest.raises(errors.APIError) as by_the_sdk:
        asyncio.run(session_over([])[0]._receive())
    assert (type(closed), closed.code, str(closed)) == (
        type(by_the_sdk.value), 1011, str(by_the_sdk.value)
    )


def test_without_the_websocket_the_sdk_reads_everything() -> None:
    async def first_two() -> list[Any]:
        session, _ = session_over([REPLY_AUDIO[0], FOR_THE_SDK[2]])
        got = []
        async for message in messages(session, None):
            got.append(message)
            if len(got) == 2:
                break
        return got

    got = asyncio.run(first_two())
    audio = reply_audio(decoded(REPLY_AUDIO[0]))
    assert isinstance(got[0], types.LiveServerMessage) and audio is not None
    assert comparable(got[0]) == comparable(audio)
    assert got[1].server_content.turn_complete is True
