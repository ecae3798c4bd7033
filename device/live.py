"""The Live session on google-genai: connect, drain the outbox, receive.

One task owns one session: it connects, reports `SetupComplete`, then runs a
sender (outbox to socket) and a receiver (socket to speaker and events) side by
side until either ends. Nothing here decides what happens next: failures and
server messages become events for the state machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable

from google.genai import errors, types
from google.genai.live import AsyncSession

from device.config import Config
from device.live_setup import connect_config, make_client
from device.outbox import Item, Outbox
from device.states import (
    ConnectFailed,
    ConnectionLost,
    Event,
    Interrupted,
    ReplyAudio,
    SetupComplete,
    TurnComplete,
)

log = logging.getLogger(__name__)

AUDIO_MIME = "audio/pcm;rate=16000"
CLOSE_TIMEOUT_S = 1.0


def describe_failure(exc: BaseException) -> str:
    """One line an owner can act on: which layer failed, never the key."""
    if isinstance(exc, errors.APIError):
        code = exc.code
        hints = {
            1008: "the service refused the API key, the model name or a setting",
            1007: "the service refused a setting or a message as invalid",
            1011: "the service had an internal error",
            1000: "the service closed the connection",
        }
        hint = hints.get(code, "the connection closed")
        detail = f": {exc.message}" if exc.message else ""
        return f"{hint} (close code {code}{detail})"
    if isinstance(exc, TimeoutError):
        return "no answer from the Live API in time"
    if isinstance(exc, socket.gaierror):
        return f"DNS: cannot resolve the Live API host ({exc.strerror})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "TCP: connection refused by the Live API host"
    if isinstance(exc, OSError):
        return f"network: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


class LiveLink:
    """The device's side of one Live session at a time."""

    def __init__(
        self,
        cfg: Config,
        outbox: Outbox,
        on_event: Callable[[Event], None],
        on_audio: Callable[[bytes], None],
        on_sent: Callable[[Item, float], None],
    ) -> None:
        self._cfg = cfg
        self._outbox = outbox
        self._on_event = on_event
        self._on_audio = on_audio
        self._on_sent = on_sent
        self._client = None
        self._task: asyncio.Task[None] | None = None
        self._resumption_handle: str | None = None
        self._reply_started = False
        self._session: AsyncSession | None = None
        self.session_id: str | None = None

    @property
    def is_open(self) -> bool:
        return self._task is not None and not self._task.done()

    def prepare(self) -> None:
        """Build the client (and its TLS context) now, so the first press does not wait for it."""
        if self._client is None:
            self._client = make_client(self._cfg)

    def open(self) -> None:
        """Start a session unless one is running; returns at once."""
        if not self.is_open:
            self._resumption_handle = None
            self._task = asyncio.create_task(self._run(), name="live-session")

    async def close(self) -> None:
        """End the session with a normal close (1000), then stop its task."""
        task, self._task = self._task, None
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await session.close()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.session_id = None

    async def _run(self) -> None:
        self.prepare()
        setup = connect_config(self._cfg, self._resumption_handle)
        started = time.monotonic()
        async with contextlib.AsyncExitStack() as stack:
            try:
                async with asyncio.timeout(self._cfg.live.connect_timeout_s):
                    session = await stack.enter_async_context(
                        self._client.aio.live.connect(model=self._cfg.live.model, config=setup)
                    )
            except Exception as exc:
                reason = describe_failure(exc)
                log.error("cannot connect: %s", reason, extra={"LIVE_ERROR": reason})
                self._on_event(ConnectFailed(reason))
                return
            self._session = session
            self.session_id = session.session_id
            setup_ms = (time.monotonic() - started) * 1000
            log.info(
                "session ready in %.0f ms",
                setup_ms,
                extra={"LIVE_SESSION": self.session_id or "", "LIVE_SETUP_MS": round(setup_ms)},
            )
            self._reply_started = False
            self._on_event(SetupComplete())
            failure: Exception | None = None
            try:
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._send(session), name="live-send")
                    tasks.create_task(self._receive(session), name="live-receive")
            except* Exception as group:
                failure = group.exceptions[0]
            if failure is not None and self._session is session:  # not closed by us
                reason = describe_failure(failure)
                log.warning("connection lost: %s", reason, extra={"LIVE_ERROR": reason})
                self._on_event(ConnectionLost(reason))

    async def _send(self, session: AsyncSession) -> None:
        while True:
            item = await self._outbox.get()
            try:
                await _send_item(session, item)
            except BaseException:
                self._outbox.push_front(item)
                raise
            self._on_sent(item, time.monotonic())

    async def _receive(self, session: AsyncSession) -> None:
        while True:
            async for message in session.receive():
                self._dispatch(message)

    def _dispatch(self, message: types.LiveServerMessage) -> None:
        content = message.server_content
        if content is not None:
            if content.model_turn is not None:
                for part in content.model_turn.parts or []:
                    if part.inline_data is not None and part.inline_data.data:
                        if not self._reply_started:
                            self._reply_started = True
                            self._on_event(ReplyAudio())
                        self._on_audio(part.inline_data.data)
            self._log_transcripts(content)
            if content.interrupted:
                self._reply_started = False
                self._on_event(Interrupted())
            if content.turn_complete:
                self._reply_started = False
                self._on_event(TurnComplete())
        update = message.session_resumption_update
        if update is not None and update.resumable and update.new_handle:
            self._resumption_handle = update.new_handle
        if message.go_away is not None:
            log.info("the service will close this connection in %s", message.go_away.time_left)

    def _log_transcripts(self, content: types.LiveServerContent) -> None:
        said = content.input_transcription
        if said is not None and said.text:
            log.info("user said: %s", said.text, extra={"LIVE_TRANSCRIPT_IN": said.text})
        spoken = content.output_transcription
        if spoken is not None and spoken.text:
            log.info("model said: %s", spoken.text, extra={"LIVE_TRANSCRIPT_OUT": spoken.text})


async def _send_item(session: AsyncSession, item: Item) -> None:
    send = session.send_realtime_input
    match item.kind:
        case "audio":
            await send(audio=types.Blob(data=item.data, mime_type=AUDIO_MIME))
        case "video":
            await send(video=types.Blob(data=item.data, mime_type="image/jpeg"))
        case "activity_start":
            await send(activity_start=types.ActivityStart())
        case "activity_end":
            await send(activity_end=types.ActivityEnd())
        case "audio_stream_end":
            await send(audio_stream_end=True)
        case "text":
            await send(text=item.data)
