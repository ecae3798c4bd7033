"""The reference client: the plain Live loop of every quickstart, to measure the box against.

`python -m rig.bench.reference` is what a Live API tutorial builds, in the
project's own words: PyAudio's blocking reads of 1024 frames in a worker thread,
one `send_realtime_input` per chunk, a receive loop that queues each reply chunk,
and blocking writes of each chunk to the speaker in a worker thread. No state
machine, no buffer of its own, the SDK's default connection options; the
service's activity detection decides the turns. It reads the server's address
from `GOOGLE_GEMINI_BASE_URL` and the key from `GEMINI_API_KEY`, as the SDK does,
and runs until it is ended (SIGTERM: the quickstarts have no shutdown either).

The benchmark runs it beside the daemon, on the same server and loopback, so
that every latency and CPU figure has a ratio measured in the same minute.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pyaudio
from google import genai
from google.genai import types

from device.config import LiveConfig
from device.live.wire import MIC_RATE, REPLY_RATE

CHUNK_FRAMES = 1024  # the quickstarts' CHUNK_SIZE: 64 ms at 16 kHz
MIC_MIME = "audio/pcm"  # as the quickstarts write it (the rate is implied)


async def listen(pa: pyaudio.PyAudio, outgoing: asyncio.Queue[dict[str, Any]]) -> None:
    """Read the microphone with blocking reads in a worker thread; queue each chunk."""
    stream = await asyncio.to_thread(
        pa.open,
        format=pyaudio.paInt16,
        channels=1,
        rate=MIC_RATE,
        input=True,
        frames_per_buffer=CHUNK_FRAMES,
    )
    try:
        while True:
            data = await asyncio.to_thread(stream.read, CHUNK_FRAMES, exception_on_overflow=False)
            await outgoing.put({"data": data, "mime_type": MIC_MIME})
    finally:
        stream.close()


async def send(session: Any, outgoing: asyncio.Queue[dict[str, Any]]) -> None:
    """Hand each chunk to the SDK."""
    while True:
        await session.send_realtime_input(audio=await outgoing.get())


async def receive(session: Any, incoming: asyncio.Queue[bytes]) -> None:
    """Queue the reply's audio; when a turn ends (interrupted too), drop what is unplayed."""
    while True:
        async for response in session.receive():
            if data := response.data:
                incoming.put_nowait(data)
        while not incoming.empty():
            incoming.get_nowait()


async def play(pa: pyaudio.PyAudio, incoming: asyncio.Queue[bytes]) -> None:
    """Write each reply chunk to the speaker with a blocking write in a worker thread."""
    stream = await asyncio.to_thread(
        pa.open, format=pyaudio.paInt16, channels=1, rate=REPLY_RATE, output=True
    )
    try:
        while True:
            chunk = await incoming.get()
            await asyncio.to_thread(stream.write, chunk)
    finally:
        stream.close()


async def main() -> None:
    """Connect, then listen, send, receive and play side by side until the process is ended."""
    client = genai.Client()
    pa = pyaudio.PyAudio()
    config: types.LiveConnectConfigDict = {"response_modalities": [types.Modality.AUDIO]}
    async with client.aio.live.connect(model=LiveConfig().model, config=config) as session:
        outgoing: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=5)
        incoming: asyncio.Queue[bytes] = asyncio.Queue()
        async with asyncio.TaskGroup() as group:
            group.create_task(listen(pa, outgoing))
            group.create_task(send(session, outgoing))
            group.create_task(receive(session, incoming))
            group.create_task(play(pa, incoming))


if __name__ == "__main__":
    asyncio.run(main())
