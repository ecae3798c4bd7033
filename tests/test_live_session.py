"""The session across connections, in-process: a fake client stands in for the SDK's, or
the local server for the service."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import errno
import json
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any, ClassVar

import google.auth
import google.auth.credentials
import pytest
from fakes import CHUNK, Gate, running
from google.auth import exceptions as auth_errors
from google.genai import errors, types
from helpers import closed_port, only_proxy, proxy, trusted_server, unknown_name, until
from test_go_away import slow_tool, talking
from test_server_fuzz import audio_part, server_content
from websockets.datastructures import Headers
from websockets.exceptions import (
    ConnectionClosedError,
    InvalidHeaderValue,
    InvalidStatus,
    InvalidURI,
)
from websockets.frames import Close
from websockets.http11 import Response
from websockets.protocol import State as WsState
from wire import at, config_for

from device.audio.earcons import earcon
from device.config import Config, LiveConfig, Secret
from device.doctor.daemon import summary_lines
from device.errors import TEXT_LIMIT
from device.live.connection import Connection
from device.live.endpoint import endpoint, proxy_of, through_proxy
from device.live.errors import answer_crossed, describe_failure, failure_fields, is_refusal
from device.live.inbound import ITEMS_LIMIT
from device.live.session import SESSION_ID_LIMIT, LiveLink
from device.live.websocket import UNSENT_HELD_LIMIT, websocket_of
from device.live.wire import (
    CLOSE_INTERNAL,
    CLOSE_POLICY,
    REPLY_RATE,
    SAMPLE_BYTES,
    pcm_mime,
)
from device.outbox import Kind, Outbox
from device.states import (
    ConnectFailed,
    ConnectionLost,
    Earcon,
    Event,
    Reconnected,
    Reconnecting,
    ReplyAudio,
    SetupComplete,
    SpeechHeard,
    TurnComplete,
)
from rig.server.server import LiveServer
from rig.server.tls import LocalCA


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
        #: The session task's pending cancellation requests as each connection opens.
        self.cancelling: list[int] = []

    @contextlib.asynccontextmanager
    async def connect(self, **_: Any) -> AsyncIterator[ClosingSession]:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.cancelling.append(task.cancelling())
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


async def test_a_dropped_connection_leaves_no_cancellation_request_on_the_session() -> None:
    """Python 3.11's TaskGroup left a cancellation request of its own on the session task
    when a connection's task failed. Python 3.11.2's asyncio.timeout (the Pi's, on Bookworm)
    then ends in CancelledError rather than TimeoutError: the wait before a reconnect
    ended the session silently, and the box never reconnected after a dropped
    connection."""
    closing = asyncio.Event()
    client = Client(closing)
    link = LiveLink(Config(), Outbox(5), on_event=lambda e: None, on_sent=lambda i, t: None)
    link._client = client  # type: ignore[assignment]  # prepare() keeps a client it has
    link.open(1)
    try:
        await client.connected.wait()
        closing.set()  # the connection drops
        await until(lambda: client.connections >= 2, within=10)
        assert client.cancelling[:2] == [0, 0]
    finally:
        await link.close()


async def test_a_session_id_the_service_makes_huge_is_kept_short() -> None:
    """It goes on every journal line of the session, into `ctl status` and each turn's
    line: a megabyte of it made every `ctl status` answer a megabyte."""
    closing = asyncio.Event()
    client = Client(closing)
    ClosingSession.session_id = "s" * 1_000_000
    try:
        link = LiveLink(Config(), Outbox(5), on_event=lambda e: None, on_sent=lambda i, t: None)
        link._client = client  # type: ignore[assignment]  # prepare() keeps a client it has
        link.open(1)
        await client.connected.wait()
        await until(lambda: link.session_id is not None, within=5)
        assert link.session_id is not None and len(link.session_id) <= SESSION_ID_LIMIT + 40
        assert link.session_id.startswith("s" * 100)
        await link.close()
    finally:
        ClosingSession.session_id = "s"


async def test_a_session_the_service_gives_no_id_gets_one_of_the_boxs_own() -> None:
    """setupComplete's sessionId is optional: without it every line of the session had an
    empty LIVE_SESSION, and the README's `journalctl LIVE_SESSION=<id>` found nothing."""
    closing = asyncio.Event()
    client = Client(closing)
    ClosingSession.session_id = None  # type: ignore[assignment]
    try:
        link = LiveLink(Config(), Outbox(5), on_event=lambda e: None, on_sent=lambda i, t: None)
        link._client = client  # type: ignore[assignment]  # prepare() keeps a client it has
        ids = []
        for session in (1, 2):
            link.open(session)
            await until(lambda: link.session_id is not None, within=5)
            ids.append(link.session_id)
            await link.close()
        assert all(ids) and ids[0] != ids[1], ids
    finally:
        ClosingSession.session_id = "s"


async def test_a_stop_during_a_hang_up_still_ends_the_session() -> None:
    """SIGTERM cancels the state machine inside a hang-up's close(), just as the service's
    close ends the connection (the cancellation 3.11's TaskGroup loses): close() forgot
    it was closing and dropped the session task, which reconnected, and the shutdown's
    own close() found nothing to wait for."""
    closing = asyncio.Event()
    client = Client(closing)
    link = LiveLink(Config(), Outbox(5), on_event=lambda e: None, on_sent=lambda i, t: None)
    link._client = client  # type: ignore[assignment]  # prepare() keeps a client it has
    link.open(1)
    session = link._task
    assert session is not None
    await client.connected.wait()
    await asyncio.sleep(0.05)  # the connection's tasks are all waiting
    hang_up = asyncio.create_task(link.close())
    closing.set()  # the service's close arrives as the hang-up cancels the session...
    await asyncio.sleep(0)
    hang_up.cancel()  # ...and the stop cancels the hang-up
    with contextlib.suppress(asyncio.CancelledError):
        await hang_up
    async with asyncio.timeout(5):
        await link.close()  # the shutdown's
    assert session.done(), "the session task outlived the shutdown's close()"
    assert client.connections == 1, "the session reconnected while it was being closed"


async def test_a_client_that_cannot_be_built_fails_the_press_and_the_next_builds_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client is built in a thread of its own; with no thread to be had (the unit's
    TasksMax reached) the build fails, not the daemon: a press ends its session with the
    reason instead of waiting for ever, and a later try builds the client."""
    events: list[Event] = []
    cfg = Config(api_key=Secret("AIza-test"))
    link = LiveLink(cfg, Outbox(5), on_event=events.append, on_sent=lambda i, t: None)
    start = threading.Thread.start

    def no_thread(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", no_thread)
    with pytest.raises(RuntimeError):
        await link.prepare()
    assert not link.prepared
    link.open(1)
    await until(lambda: events)
    assert isinstance(events[0], ConnectionLost) and "can't start new thread" in events[0].reason
    monkeypatch.setattr(threading.Thread, "start", start)
    async with asyncio.timeout(30):
        await link.prepare()
    assert link.prepared



class ForgetfulService:
    """Every connection completes setup, hands out a resumption handle and is closed at
    once; every resume with a handle is refused as unknown (1007)."""

    session_id = "s"

    def __init__(self) -> None:
        self.aio = self.live = self
        self.fresh = self.resumes = 0

    @contextlib.asynccontextmanager
    async def connect(self, **options: Any) -> AsyncIterator[ForgetfulService]:
        if options["config"].session_resumption.handle:
            self.resumes += 1
            raise errors.APIError(1007, {"error": {"message": "unknown handle"}})
        self.fresh += 1
        yield self

    async def receive(self) -> AsyncIterator[types.LiveServerMessage]:
        update = types.LiveServerSessionResumptionUpdate(new_handle="h", resumable=True)
        yield types.LiveServerMessage(session_resumption_update=update)
        raise ConnectionError("closed by the service")

    async def close(self) -> None: ...


async def test_a_service_that_refuses_every_resume_is_given_up_on() -> None:
    """A fresh session after a refused resume is tried at once, but within the same streak
    of failures: it used to start the streak afresh, and the box reconnected every second
    for as long as the conversation stayed open."""
    service = ForgetfulService()
    lost = await session_lost(service, reconnect_for_s=2.0)
    assert "gave up" in lost.reason
    assert service.resumes >= 1 and service.fresh >= 2


async def session_lost(service: object, reconnect_for_s: float) -> ConnectionLost:
    """Open a session on `service` (the SDK client's stand-in) and wait for its end."""
    events: list[Event] = []
    cfg = Config(api_key=Secret("AIza-test"))
    cfg = dataclasses.replace(
        cfg, live=dataclasses.replace(cfg.live, reconnect_for_s=reconnect_for_s)
    )
    link = LiveLink(cfg, Outbox(5), on_event=events.append, on_sent=lambda i, t: None)
    link._client = service  # type: ignore[assignment]
    link.open(1)
    try:
        await until(lambda: any(isinstance(e, ConnectionLost) for e in events), within=20)
    finally:
        await link.close()
    return next(e for e in events if isinstance(e, ConnectionLost))


class MovingService:
    """Every connection gets goAway with no time left the moment it is set up; the
    service then takes `close_s` to answer the box's close."""

    session_id = "s"

    def __init__(self, close_s: float) -> None:
        self.aio = self.live = self
        self.close_s = close_s
        self.connections = 0

    @contextlib.asynccontextmanager
    async def connect(self, **_: Any) -> AsyncIterator[MovingService]:
        self.connections += 1
        yield self

    async def receive(self) -> AsyncIterator[types.LiveServerMessage]:
        yield types.LiveServerMessage(go_away=types.LiveServerGoAway(time_left="0s"))
        await asyncio.Event().wait()

    async def close(self) -> None:
        await asyncio.sleep(self.close_s)


async def test_a_service_moving_every_connection_at_setup_is_paced_and_given_up_on() -> None:
    """A move within a second of setup is paced as a failure: the time the service
    took to answer the close (1.5 s here) counted as the connection's life, made every
    move a planned one, and the box reconnected every 1.5 s for ever."""
    lost = await session_lost(MovingService(close_s=1.5), reconnect_for_s=3.0)
    assert "gave up" in lost.reason


def link_to(service: object, on_event: Callable[[Event], None] = lambda e: None) -> LiveLink:
    """A link, its key set, whose connections `service` (the SDK client's stand-in) makes."""
    link = LiveLink(Config(api_key=Secret("AIza-test")), Outbox(5), on_event=on_event,
                    on_sent=lambda i, t: None)  # fmt: skip
    link._client = service  # type: ignore[assignment]
    return link


class FailingAfterOne:
    """The first connection is closed by the service at once; every later try takes a
    while (TLS, an HTTP 503 after the network's latency) and fails: the third only once
    `answer` is set."""

    session_id = "s"

    def __init__(self) -> None:
        self.aio = self.live = self
        self.began: list[float] = []  # each later try
        self.tries: list[tuple[float, float]] = []  # (began, failed) of each later try
        self.answer = asyncio.Event()

    @contextlib.asynccontextmanager
    async def connect(self, **_: Any) -> AsyncIterator[FailingAfterOne]:
        if not hasattr(self, "served"):
            self.served = True
            yield self
            return
        began = time.monotonic()
        self.began.append(began)
        if len(self.began) == 3:
            await self.answer.wait()
        else:
            await asyncio.sleep(0.3)
        self.tries.append((began, time.monotonic()))
        raise ConnectionError("503 service unavailable")

    async def receive(self) -> AsyncIterator[types.LiveServerMessage]:
        raise ConnectionError("closed by the service")
        yield  # an async generator, as the SDK's

    async def close(self) -> None: ...


async def test_a_press_during_a_reconnect_try_that_fails_has_the_next_go_at_once() -> None:
    """The press came while a try was in flight: it was forgotten as the wait after it
    began, and the person waited out the backoff (up to 8 s) with the LEDs connecting."""
    service = FailingAfterOne()
    link = link_to(service)
    link.open(1)
    try:
        await until(lambda: len(service.began) == 3, within=10)  # the backoff has grown
        link.hurry()  # the press, while the third try is in flight ...
        service.answer.set()  # ... which then fails
        await until(lambda: len(service.tries) == 4, within=10)
    finally:
        await link.close()
    (_, third_failed), (fourth_began, _) = service.tries[2], service.tries[3]
    assert fourth_began - third_failed < 1, "it waited out the backoff (2 s at least)"


class HandleGiver:
    """Each connection is set up, hands out a resumption handle and stays open; the
    handle each setup asked to resume is kept."""

    session_id = "s"

    def __init__(self) -> None:
        self.aio = self.live = self
        self.resumed: list[str | None] = []

    @contextlib.asynccontextmanager
    async def connect(self, **options: Any) -> AsyncIterator[HandleGiver]:
        self.resumed.append(options["config"].session_resumption.handle)
        yield self

    async def receive(self) -> AsyncIterator[types.LiveServerMessage]:
        update = types.LiveServerSessionResumptionUpdate(new_handle="h1", resumable=True)
        yield types.LiveServerMessage(session_resumption_update=update)
        await asyncio.Event().wait()

    async def close(self) -> None: ...


async def test_a_conversation_after_a_hang_up_starts_afresh_not_resuming_the_last() -> None:
    """The next press after a hang-up is a new conversation: resuming the last one's handle
    brought back what was said before (the owner hung up on it), or, the service having
    forgotten it, failed the first connection (the error state at a press)."""
    service = HandleGiver()
    link = link_to(service)
    link.open(1)
    try:
        await until(lambda: link._handle == "h1")  # the service gave the session a handle
        await link.close()  # the hang-up
        link.open(2)  # the next press
        await until(lambda: len(service.resumed) == 2)
    finally:
        await link.close()
    assert service.resumed == [None, None]


class FailsFirst:
    """The session's first connection fails at once (an HTTP 503, a reset); the next is
    set up and stays open."""

    session_id = "s"

    def __init__(self) -> None:
        self.aio = self.live = self
        self.tries = 0

    @contextlib.asynccontextmanager
    async def connect(self, **_: Any) -> AsyncIterator[FailsFirst]:
        self.tries += 1
        if self.tries == 1:
            raise ConnectionError("503 service unavailable")
        yield self

    async def receive(self) -> AsyncIterator[types.LiveServerMessage]:
        await asyncio.Event().wait()
        yield types.LiveServerMessage()  # an async generator, as the SDK's

    async def close(self) -> None: ...


async def test_a_first_connection_that_fails_at_once_is_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hiccup at the press (a 503, a reset) is tried once more: without it the press
    ended in the error state, the person's question dropped."""
    monkeypatch.setattr("device.live.session.FIRST_RETRY_S", 0.01)
    service, events = FailsFirst(), list[Event]()
    link = link_to(service, events.append)
    link.open(1)
    try:
        await until(lambda: events)
    finally:
        await link.close()
    assert events == [SetupComplete(session=1)] and service.tries == 2


@pytest.mark.parametrize(
    ("failure", "secret", "kept"),
    [
        (
            InvalidHeaderValue("x-goog-api-key", "AIza-pasted-key\nsecond line"),
            "pasted-key",
            "invalid x-goog-api-key header: ***",
        ),
        (
            InvalidHeaderValue("Authorization", "Token auth_tokens/eph-123"),
            "eph-123",
            "invalid Authorization header: ***",
        ),
        (
            InvalidURI("wss://h/ws?access_token=auth_tokens/eph-123&x=1", "bad"),
            "eph-123",
            "wss://h/ws?access_token=***&x=1 isn't a valid URI",
        ),
    ],
)
def test_a_failure_never_quotes_a_credential(failure: Exception, secret: str, kept: str) -> None:
    """A failure's words go where the journal's mask does not: `ctl status`, systemd's
    STATUS=, `ask` and the doctor print them."""
    words, fields = describe_failure(failure), failure_fields(failure)
    assert secret not in words and secret not in str(fields)
    assert kept in words and fields["LIVE_ERROR"] == words


@pytest.mark.parametrize(
    "frame",
    [base64.b64encode(bytes(range(256)) * 40), b"\x80\x01" * 3000],  # audio; not even text
    ids=["base64", "binary"],
)
async def test_a_frame_that_is_not_json_is_named_by_its_size_never_quoted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, frame: bytes
) -> None:
    """The SDK's error for it quotes the whole frame: base64 audio (or whatever a broken
    proxy sent) went into the journal's line and LIVE_ERROR, 4 KB of it, and `ctl status`."""
    lost, reason = await connection_lost_by(frame, monkeypatch, caplog)
    words = f"the service sent a frame that is not JSON ({len(frame)} bytes)"
    assert lost.getMessage() == f"connection lost: {words}"
    assert words == lost.LIVE_ERROR and lost.LIVE_FAILURE == "undecodable"
    assert reason == words


async def test_a_message_the_sdk_cannot_read_is_named_without_the_values_it_quotes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Reply audio whose base64 is broken: the SDK's models refuse it quoting a piece of it,
    and the journal's line carried that piece, over four lines."""
    data = base64.b64encode(bytes(range(256)) * 40).decode() + "!"
    part = {"inlineData": {"data": data, "mimeType": "audio/pcm;rate=24000"}}
    frame = json.dumps({"serverContent": {"modelTurn": {"parts": [part]}}}).encode()
    lost, reason = await connection_lost_by(frame, monkeypatch, caplog)
    line = lost.getMessage()
    assert line.startswith("connection lost: the service sent a message that cannot be decoded")
    assert "inlineData.data" in line and "\n" not in line
    assert data[:8] not in line and data[-9:] not in line
    assert lost.LIVE_ERROR == reason == line.removeprefix("connection lost: ")


@pytest.mark.parametrize(
    "message",
    [
        {"serverContent": {"modelTurn": {"parts": [{}] * 349_000}}},
        {"toolCall": {"functionCalls": [{}] * 349_000}},
        {"usageMetadata": {"promptTokensDetails": [{}] * 349_000}},
        {"serverContent": {"modelTurn": {"parts": [0] * 500_000}}},
    ],
    ids=["parts", "calls", "usage", "zeros"],
)
async def test_a_message_of_a_myriad_items_ends_the_connection_before_the_sdk_reads_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, message: Any
) -> None:
    """One frame under 1 MiB of empty parts: the SDK made a model of each, 3.4 s of the
    event loop on a PC (the watchdog's 30 s on a Pi Zero) and 290 MB, past the unit's
    MemoryMax, and read on; of zeros, as long and more, to refuse each. The box reconnects
    as for any message it cannot decode."""
    frame = json.dumps(message, separators=(",", ":")).encode()
    assert len(frame) < 2**20
    lost, reason = await connection_lost_by(frame, monkeypatch, caplog)
    words = f"the service sent a message that cannot be decoded (over {ITEMS_LIMIT} items"
    assert reason.startswith(words) and lost.LIVE_FAILURE == "undecodable"


async def connection_lost_by(
    frame: bytes, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> tuple[logging.LogRecord, str]:
    """The local server sends `frame` on a session's connection: the journal's line for
    the connection's end, and the reason the state machine was given."""
    caplog.set_level(logging.INFO)
    events: list[Event] = []
    async with trusted_server(monkeypatch, pace=0, reply_seconds=0.2) as server:
        link = LiveLink(config_for(server), Outbox(5), events.append, lambda _item, _t: None)
        link.open(1)
        try:
            await until(lambda: events)  # set up
            await server.send_raw(frame)
            await until(lambda: any(isinstance(e, Reconnecting) for e in events))
        finally:
            await link.close()
    (lost,) = [r for r in caplog.records if r.getMessage().startswith("connection lost")]
    return lost, next(e for e in events if isinstance(e, Reconnecting)).reason


def test_a_certificate_out_of_its_dates_points_at_the_clock() -> None:
    """A Pi has no clock of its own: before NTP has set it, every certificate looks not
    yet valid, and the journal said only CERTIFICATE_VERIFY_FAILED (the doctor said more)."""
    refused = ssl.SSLCertVerificationError(1, "certificate verify failed")
    refused.reason = "CERTIFICATE_VERIFY_FAILED"
    refused.verify_message = "certificate is not yet valid"
    assert describe_failure(refused) == (
        "TLS: CERTIFICATE_VERIFY_FAILED "
        "(certificate is not yet valid: check the clock, timedatectl)"
    )
    refused.verify_message = "self-signed certificate"
    assert describe_failure(refused) == (
        "TLS: CERTIFICATE_VERIFY_FAILED (self-signed certificate: the network answers for "
        "the service: a sign-in page (captive portal) or a proxy)"
    )


@pytest.mark.parametrize(
    ("status", "words", "refused"),
    [
        (429, "too many requests: a quota or rate limit of the key (HTTP 429 Too Many Requests)",
         False),
        (503, "the service is unavailable for a moment (HTTP 503 Service Unavailable)", False),
        (403, "the service refused the credentials (HTTP 403 Forbidden)", True),
    ],
)
def test_an_http_answer_to_the_upgrade_is_named_with_its_status(
    status: int, words: str, refused: bool
) -> None:
    """A quota (429) or an outage (503) answered before the WebSocket exists was
    LIVE_FAILURE=other with websockets' words, which an owner filtering by kind missed."""
    phrase = HTTPStatus(status).phrase
    failure = InvalidStatus(Response(status, phrase, Headers()))
    assert describe_failure(failure) == words
    assert failure_fields(failure) | {"LIVE_ERROR": ""} == {
        "LIVE_FAILURE": "http", "LIVE_HTTP_STATUS": status, "LIVE_ERROR": ""}  # fmt: skip
    assert is_refusal(failure) is refused


def test_a_close_websockets_ended_itself_is_a_close_with_its_code() -> None:
    """The service's 1011 whose close websockets gave up finishing: not 'other'."""
    failure = ConnectionClosedError(Close(1011, "Internal error encountered."), None)
    assert describe_failure(failure) == (
        "the service had an internal error (close code 1011: Internal error encountered.)"
    )
    assert failure_fields(failure)["LIVE_FAILURE"] == "closed"
    assert failure_fields(failure)["LIVE_CLOSE_CODE"] == 1011


def test_a_tools_answer_crossing_its_withdrawal_keeps_the_services_close_code() -> None:
    """The 1007 that follows an answer crossing its call's withdrawal is a race, not a
    refusal: its journal line still names the close (an owner filters on the code)."""
    failure = answer_crossed(ConnectionClosedError(Close(1007, "invalid function id"), None))
    assert failure_fields(failure)["LIVE_FAILURE"] == "closed"
    assert failure_fields(failure)["LIVE_CLOSE_CODE"] == 1007
    assert not is_refusal(failure)


def test_a_tools_answer_crossing_its_withdrawal_is_said_as_a_crossing_not_a_refusal() -> None:
    """A race the box reconnects over, not a refusal: its journal line ("connection lost:
    ...") and the reconnecting state's reason went on to quote the 1007's usual words, "a
    setting or a message was refused as invalid", sending the owner to check [live] model,
    voice and language."""
    failure = answer_crossed(ConnectionClosedError(Close(1007, "invalid function id"), None))
    assert describe_failure(failure) == (
        "a tool's answer crossed the service's withdrawal of it (close code 1007: invalid "
        "function id)"
    )


async def test_a_resolver_that_never_answers_is_named_not_a_plain_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Wi-Fi up, the internet down: the router's resolver waits for an uplink that is not
    there, and the one connect timeout ran out with "no answer from the Live API in
    time", the same line as a slow service."""
    host = "live.resolver-test.invalid"
    released = threading.Event()
    resolve = socket.getaddrinfo

    def silent_resolver(name: Any, *args: Any, **kwargs: Any) -> Any:
        if name == host:
            released.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return resolve(name, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", silent_resolver)
    live = LiveConfig(base_url=f"https://{host}", connect_timeout_s=0.5)
    events: list[Event] = []
    link = LiveLink(Config(live=live, api_key=Secret("AIza-test")), Outbox(5), events.append,
                    lambda _item, _t: None)
    link.open(1)
    try:
        await until(lambda: bool(events), within=30)
    finally:
        released.set()
        await link.close()
    (failed,) = events
    assert isinstance(failed, ConnectFailed)
    assert failed.reason == f"DNS: the resolver does not answer ({host} not resolved in 1 s)"


async def test_a_client_that_cannot_be_built_is_a_reason_without_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reason goes to the error state: `ctl status` and systemctl's STATUS= show it.
    The journal's line about it was masked; the reason, the exception's text, was not."""
    from device.live import setup

    key = "gateway-key-0123456789abcdef"

    def refuse(cfg: Config, credentials: Any = None) -> Any:
        raise ValueError(f"invalid header value {{'x-goog-api-key': {key!r}}}")

    monkeypatch.setattr(setup, "make_client", refuse)
    events: list[Event] = []
    link = LiveLink(Config(api_key=Secret(key)), Outbox(5), events.append,
                    on_sent=lambda i, t: None)  # fmt: skip
    link.open(1)
    try:
        await until(lambda: any(isinstance(e, ConnectionLost) for e in events), within=10)
    finally:
        await link.close()
    (lost,) = [e for e in events if isinstance(e, ConnectionLost)]
    assert "invalid header value" in lost.reason and key not in lost.reason, lost.reason


class SlowUplink:
    """A connection whose sends take their time (a slow Wi-Fi uplink, a 100 KB JPEG)."""

    def __init__(self) -> None:
        self.sending = asyncio.Event()

    async def send_realtime_input(self, **fields: object) -> None:
        self.sending.set()
        await asyncio.sleep(3600)

    async def receive(self) -> AsyncIterator[Any]:
        await asyncio.sleep(3600)
        yield None


@pytest.mark.parametrize(("kind", "data"), [("video", b"\xff\xd8 the kitchen"),
                                            ("audio", b"\x10\x27" * 640)])  # fmt: skip
async def test_what_was_on_its_way_at_a_hang_up_is_not_sent_in_the_next_session(
    kind: Kind, data: bytes
) -> None:
    """A hang-up drops the outbox, then closes the link, which cancels a send on its way:
    the frame or chunk was put back in the outbox, which outlives sessions, and the next
    session (hours later) sent it first."""
    uplinks: list[SlowUplink] = []

    class Link(LiveLink):
        async def _client_for_new_session(self) -> bool:
            return False

        async def _connect(self) -> Connection:
            uplinks.append(SlowUplink())
            return Connection(uplinks[-1], contextlib.AsyncExitStack(), self._cfg.live,
                              self._outbox, self._hooks, self._turn)  # fmt: skip

    outbox = Outbox(5)
    link = Link(Config(), outbox, lambda e: None, lambda item, t: None)
    link.open(1)
    outbox.put(kind, data)
    await until(lambda: uplinks and uplinks[0].sending.is_set(), within=2)
    outbox.clear()  # DropOutbox
    await link.close()  # CloseSession
    assert outbox.get_nowait() is None, "left for the next session"
    link.open(2)  # the next press, hours later
    await until(lambda: len(uplinks) == 2, within=2)
    await asyncio.sleep(0.3)
    await link.close()
    assert not uplinks[1].sending.is_set(), "the new session sent the old session's item"


@pytest.mark.parametrize(
    "failure",
    [
        auth_errors.DefaultCredentialsError(
            "Your default credentials were not found. To set up Application Default "
            "Credentials, see https://cloud.google.com/docs/authentication/external/set-up-adc "
            "for more information."
        ),
        auth_errors.RefreshError(
            "invalid_grant: Token has been expired or revoked.",
            {"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
        ),
    ],
    ids=["none", "revoked"],
)
def test_vertex_credentials_that_no_longer_work_are_said_as_such_and_not_retried(
    failure: Exception,
) -> None:
    """A Vertex AI box whose application default credentials went (a file removed, a
    refresh token revoked months later) showed "RefreshError: ('invalid_grant: ...',
    {...})" and, mid-conversation, reconnected for reconnect_for_s though no try could
    succeed."""
    words = describe_failure(failure)
    assert words.startswith("Vertex AI credentials: "), words
    assert "{" not in words and "Error:" not in words
    assert failure_fields(failure)["LIVE_FAILURE"] == "credentials"
    assert is_refusal(failure)


def test_a_credentials_server_out_of_reach_is_the_network_and_retried() -> None:
    failure = auth_errors.TransportError(
        "HTTPSConnectionPool(host='oauth2.googleapis.com', port=443): Max retries exceeded"
    )
    assert failure_fields(failure)["LIVE_FAILURE"] == "network"
    assert describe_failure(failure).startswith("network: Vertex AI credentials: ")
    assert not is_refusal(failure)


# ---- a service that misbehaves, through the local server --------------------------------


async def each_connection(server: LiveServer, frames: list[str], code: int) -> None:
    """On every new connection: send `frames` after setup, then close with `code`."""
    seen: set[int] = set()
    while True:
        for number, connection in list(server._live.items()):
            if number not in seen and connection.is_open:
                seen.add(number)
                for frame in frames:
                    await connection.send_raw(frame)
                await asyncio.sleep(0.05)
                await connection.close(code, "Internal error encountered.")
        await asyncio.sleep(0.005)


async def connections_in_three_seconds(
    server: LiveServer, frames: list[str], speaker: Speaker | None = None
) -> int:
    """The connections a session makes in 3 s to a service that sends `frames` after every
    setup, then closes with 1011; reply audio goes to `speaker`, which never plays out."""

    def on_event(event: Event) -> None:
        if speaker is not None and isinstance(event, ReplyAudio):
            speaker.feed(event.pcm)

    sabotage = asyncio.create_task(each_connection(server, frames, 1011))
    link = LiveLink(config_for(server), Outbox(5), on_event, lambda *_: None, speaker=speaker)
    link.open(1)
    try:
        await asyncio.sleep(3.0)
        return link.connections
    finally:
        sabotage.cancel()
        await link.close()


BARE_END = json.dumps({"serverContent": {"turnComplete": True}})
BARE_INTERRUPTED = json.dumps({"serverContent": {"interrupted": True}})


@pytest.mark.parametrize(
    "frames", [[BARE_END], [BARE_INTERRUPTED, BARE_END]], ids=["turnComplete", "interrupted"]
)
async def test_a_turn_end_nobody_asked_for_does_not_reset_the_backoff(
    server: LiveServer, frames: list[str]
) -> None:
    """A service that ends every connection after setup is paced (0.5 s, 1 s, 2 s...); one
    that also sends a turnComplete (no turn was asked, no reply came) before each close
    had every connection count as proved: the box reconnected at once, about twelve
    times a second, for as long as the session stayed open, and never gave up."""
    connections = await connections_in_three_seconds(server, frames)
    assert connections <= 6, f"{connections} connections in 3 s"


async def test_a_flood_of_tiny_messages_lets_the_rest_of_the_box_run_between_them(
    server: LiveServer,
) -> None:
    """Thousands of one-letter transcriptions a second: websockets hands over every frame
    it has read without waiting, and the receiver handled them all in a row, the event loop
    held meanwhile (300 ms per burst here, seconds on a Pi Zero): a press, the watchdog's
    heartbeat and SIGTERM waited behind it."""
    ticks = 0
    at_tick: list[int] = []  # the loop's turn each transcription was handled in
    events: list[Any] = []

    def on_event(event: Any) -> None:
        events.append(event)
        if isinstance(event, SpeechHeard):
            at_tick.append(ticks)

    link = LiveLink(config_for(server), Outbox(5), on_event, lambda *_: None)
    link.open(1)
    try:
        await until(lambda: any(isinstance(e, SetupComplete) for e in events), within=10)
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0)

        counting = asyncio.create_task(ticker())
        ws = server.connection().ws
        frame = json.dumps({"serverContent": {"inputTranscription": {"text": "a"}}})
        for _ in range(5000):
            await ws.send(frame)
        await until(lambda: len(at_tick) >= 5000, within=30)
        stop.set()
        await counting
    finally:
        await link.close()
    in_a_row = max(at_tick.count(tick) for tick in set(at_tick))
    assert in_a_row <= 16, f"{in_a_row} messages handled without the loop running anything else"


async def test_an_error_the_service_writes_a_megabyte_of_is_shown_cut(server: LiveServer) -> None:
    """A frame like `{"code": 1008, "message": <800 KB>}` is raised by the SDK as an error
    with that code, and its message became the reason of the error state whole: every
    `ctl status` answered 800 KB, and `ctl text` refused with as much. A close's reason is
    at most 123 bytes; nothing the service writes may grow what the box says."""
    events: list[Any] = []
    link = LiveLink(config_for(server), Outbox(5), events.append, lambda *_: None)
    link.open(1)
    try:
        await until(lambda: any(isinstance(e, SetupComplete) for e in events), within=10)
        await server.send_raw(json.dumps({"code": 1008, "message": "x" * 800_000}))
        await until(lambda: any(isinstance(e, ConnectionLost) for e in events), within=10)
    finally:
        await link.close()
    (lost,) = [e for e in events if isinstance(e, ConnectionLost)]
    assert lost.reason.startswith("the API key, the model name or a setting was refused")
    assert len(lost.reason) <= TEXT_LIMIT + 100, f"a reason of {len(lost.reason)} characters"


async def line_for_a_frame(
    server: LiveServer, caplog: pytest.LogCaptureFixture, frame: str
) -> logging.LogRecord:
    """The journal's "connection lost" line once the service sent `frame` after setup."""
    caplog.set_level(logging.INFO, logger="device.live")
    events: list[Any] = []
    link = LiveLink(config_for(server), Outbox(5), events.append, lambda *_: None)
    link.open(1)
    try:
        await until(lambda: any(isinstance(e, SetupComplete) for e in events), within=10)
        await server.send_raw(frame)
        await until(lambda: any(isinstance(e, Reconnecting) for e in events), within=10)
    finally:
        await link.close()
    (lost,) = [r for r in caplog.records if r.getMessage().startswith("connection lost")]
    return lost


async def test_a_frame_over_the_size_limit_is_named_not_blamed_on_the_network(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """websockets ends the connection itself (1009) for a frame over 1 MiB, and the SDK
    raises that as 1006: the journal said "the connection dropped without a goodbye
    (network)", LIVE_FAILURE=closed, LIVE_CLOSE_CODE=1006, and an owner checked the Wi-Fi."""
    words = {"outputTranscription": {"text": "w" * 2**20}}
    lost = await line_for_a_frame(server, caplog, json.dumps({"serverContent": words}))
    assert "larger than allowed" in lost.getMessage() and "network" not in lost.getMessage()
    assert lost.LIVE_FAILURE == "undecodable"
    assert not hasattr(lost, "LIVE_CLOSE_CODE")


# ---- Vertex AI credentials over months ---------------------------------------------


class Credentials(google.auth.credentials.Credentials):
    """Application default credentials, each load a new access token on its first use."""

    made: ClassVar[list[Credentials]] = []

    def __init__(self) -> None:
        super().__init__()
        Credentials.made.append(self)
        self.number = len(Credentials.made)

    def refresh(self, request: object) -> None:
        self.token = f"token-{self.number}"
        self.expiry = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=1)


async def test_vertex_credentials_the_clock_stepped_back_on_are_loaded_anew(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """google-auth judges its access token's expiry by the wall clock. NTP steps the clock
    back a day (it had run ahead): the token, expired at the service after its hour, still
    looks good for a day, and every press was refused ("the service refused the
    credentials") until the clock caught up; a restart was the owner's only way out."""
    monkeypatch.setattr(google.auth, "default", lambda **_: (Credentials(), "p"))
    events: list[Event] = []
    options = {"pace": 0, "reply_seconds": 0.2, "bearer_tokens": {"token-1"}}
    async with trusted_server(monkeypatch, **options) as server:
        live = {"backend": "vertex", "project": "p", "location": "l", "model": "gemini-3.8-live"}
        cfg = dataclasses.replace(config_for(server, live=live), api_key=None)
        link = LiveLink(cfg, Outbox(5), events.append, lambda _item, _t: None)
        link.open(1)
        await until(lambda: events)
        assert isinstance(events[-1], SetupComplete), events
        await link.close()
        # An hour on, and the clock stepped back a day: token-1 is spent at the service,
        # and looks good for a day yet.
        server.config.bearer_tokens = {"token-2"}
        (credentials,) = Credentials.made
        credentials.expiry += timedelta(days=1)
        events.clear()
        link.open(2)  # the next press
        await until(lambda: events, within=10)
        await link.close()
    assert isinstance(events[-1], SetupComplete), events


class Revoked(google.auth.credentials.Credentials):
    """Application default credentials whose refresh token was revoked: every load the same."""

    refreshes: ClassVar[int] = 0

    def refresh(self, request: object) -> None:
        Revoked.refreshes += 1
        raise auth_errors.RefreshError(
            "invalid_grant: Token has been expired or revoked.", {"error": "invalid_grant"}
        )


async def test_revoked_vertex_credentials_cost_two_token_requests_a_press(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each press asks the token server twice (the credentials it has, then as loaded
    anew), fails with the credentials' words, and never loops."""
    monkeypatch.setattr(google.auth, "default", lambda **_: (Revoked(), "p"))
    Revoked.refreshes = 0
    async with trusted_server(monkeypatch, pace=0, reply_seconds=0.2) as server:
        live = {"backend": "vertex", "project": "p", "location": "l", "model": "gemini-3.8-live"}
        cfg = dataclasses.replace(config_for(server, live=live), api_key=None)
        events: list[Any] = []
        link = LiveLink(cfg, Outbox(5), events.append, lambda _item, _t: None)
        per_press = []
        for press in (1, 2, 3):
            events.clear()
            link.open(press)
            await until(lambda: events, within=10)
            await link.close()
            (failed,) = events
            assert isinstance(failed, ConnectFailed)
            assert failed.reason.startswith("Vertex AI credentials: invalid_grant")
            per_press.append(Revoked.refreshes)
            Revoked.refreshes = 0
    assert per_press == [2, 2, 2]


class Renewed(google.auth.credentials.Credentials):
    """The service account key the owner put in place of the revoked one."""

    def refresh(self, request: object) -> None:
        self.token = "renewed"
        self.expiry = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=1)


async def test_vertex_credentials_the_owner_replaced_work_at_the_next_press(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The refresh token was revoked: the box says so. The owner puts a new key file where
    GOOGLE_APPLICATION_CREDENTIALS points, as a key file is corrected on the Gemini API,
    and presses again: the box kept the credentials it loaded before, and refused every
    press until a restart."""
    loaded: list[type[google.auth.credentials.Credentials]] = [Revoked]
    monkeypatch.setattr(google.auth, "default", lambda **_: (loaded[-1](), "p"))
    options = {"pace": 0, "reply_seconds": 0.2, "bearer_tokens": {"renewed"}}
    async with trusted_server(monkeypatch, **options) as server:
        live = {"backend": "vertex", "project": "p", "location": "l", "model": "gemini-3.8-live"}
        cfg = dataclasses.replace(config_for(server, live=live), api_key=None)
        events: list[Any] = []
        link = LiveLink(cfg, Outbox(5), events.append, lambda _item, _t: None)
        link.open(1)
        await until(lambda: events, within=10)
        await link.close()
        assert isinstance(events[-1], ConnectFailed), events
        loaded.append(Renewed)  # the owner's new key file
        events.clear()
        link.open(2)
        await until(lambda: events, within=10)
        await link.close()
    assert isinstance(events[-1], SetupComplete), events


AHEAD_S = 4.0  # what the speaker holds before the link waits for it (Playback's AHEAD_S)


class Speaker:
    """The speaker as the link sees it: reply audio fed through the events, played only
    when the test says so."""

    def __init__(self) -> None:
        self.heard = bytearray()  # the reply audio the person hears (or will)
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

    @property
    def seconds(self) -> float:
        return len(self.heard) / SAMPLE_BYTES / REPLY_RATE


@contextlib.asynccontextmanager
async def link_to_a_speaker(
    server: LiveServer,
) -> AsyncIterator[tuple[LiveLink, Outbox, list[Any], Speaker]]:
    """A link set up on the local server, the reply audio it gives going to a `Speaker`
    the test plays out; closed at the end."""
    speaker = Speaker()
    events: list[Any] = []

    def on_event(event: Any) -> None:
        events.append(event)
        if isinstance(event, ReplyAudio) and not event.talked_over:
            speaker.feed(event.pcm)

    outbox = Outbox(5)
    link = LiveLink(config_for(server), outbox, on_event, lambda *_: None, speaker=speaker)
    link.open(1)
    try:
        await until(lambda: any(isinstance(e, SetupComplete) for e in events), within=10)
        yield link, outbox, events, speaker
    finally:
        await link.close()


async def test_a_reply_received_whole_before_a_drop_is_still_heard_to_its_end(
    server: LiveServer,
) -> None:
    """The service sends a 20 s reply at once (as it does, far faster than it plays), then
    the connection drops. All of it, its turnComplete too, had arrived: 4 s were in the
    speaker, 16 s waited in the read-ahead. Those 16 s went with the connection, without a
    word in the journal: the person heard the reply stop mid-sentence. A goAway carries them
    on to the next connection; a drop must too (or at least say it dropped them)."""
    server.config.reply_seconds = 20.0
    async with link_to_a_speaker(server) as (_, outbox, events, speaker):
        outbox.put("text", "tell me a long story")
        # The whole reply is on the wire, its end read into the box: then the drop.
        await server.wait_for(lambda: "turn_complete" in server.kinds(direction="out"), 10)
        await until(lambda: speaker.seconds >= AHEAD_S - 0.5, within=10)
        await asyncio.sleep(0.5)
        server.drop()
        await until(lambda: any(isinstance(e, Reconnected) for e in events), within=15)
        for _ in range(20):  # the speaker plays on; what waited comes as it has room
            speaker.play_out()
            await asyncio.sleep(0.05)
    assert speaker.seconds == pytest.approx(20.0, abs=0.1), (
        f"{speaker.seconds:.1f} s of a 20 s reply received whole reached the speaker"
    )
    assert any(isinstance(e, TurnComplete) and not e.talked_over for e in events)


def reply_part(pcm: bytes) -> bytes:
    return server_content(modelTurn={"parts": [audio_part(pcm)]})


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
    sound = ramp(round((AHEAD_S + 0.5) * REPLY_RATE))
    split = round(AHEAD_S * REPLY_RATE) * SAMPLE_BYTES + 1  # the speaker full, a byte over
    async with link_to_a_speaker(server) as (link, _, events, speaker):
        for frame in (reply_part(sound[:split]), reply_part(sound[split:]),
                      server_content(turnComplete=True)):  # fmt: skip
            await server.send_raw(frame)
        connection = link._connection
        assert connection is not None
        await until(lambda: connection.whole_reply_left() is not None, within=10)  # it waits
        server.drop()
        await until(lambda: any(isinstance(e, Reconnected) for e in events), within=10)
        speaker.play_out()
        await until(lambda: any(isinstance(e, TurnComplete) for e in events), within=10)
    assert bytes(speaker.heard) == sound, "the rest of the reply was shifted by a byte: noise"


async def test_a_message_nested_too_deeply_is_named_undecodable_not_a_bug_of_the_box(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A frame of a hundred thousand nested arrays (200 kB, well under max_size) is more
    than Python's JSON decoder takes: the connection ends, as for any frame that cannot be
    read. The journal said LIVE_FAILURE=other and "RecursionError: maximum recursion depth
    exceeded while decoding a JSON array from a unicode string", which reads as the box's
    own bug, and `LIVE_FAILURE=undecodable` (README) did not find it. (Trixie's Python
    3.13 decodes 5000 levels; 3.11's stops near 1000: deep enough for both.)"""
    deep = '{"serverContent": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}}"
    lost = await line_for_a_frame(server, caplog, deep)
    assert lost.LIVE_FAILURE == "undecodable"
    assert "RecursionError" not in lost.getMessage() and "nested" in lost.getMessage()


async def test_a_service_that_pings_and_never_reads_cannot_grow_the_box_without_end(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """websockets answers every ping with a pong, written whatever the write side's flow
    control says: a service that sends pings (and now and then a message, so the link looks
    alive) and reads nothing made the box hold every pong in user space, 29 MB after 25 MB of
    pings here and on at the link's speed, past the unit's MemoryMax (256M). The box gives
    up on such a connection (and resumes), saying why."""
    caplog.set_level(logging.INFO, logger="device.live")
    events: list[Any] = []
    link = LiveLink(config_for(server), Outbox(5), events.append, lambda *_: None)
    link.open(1)
    held = 0
    try:
        await until(lambda: any(isinstance(e, SetupComplete) for e in events), within=10)
        connection = link._connection
        assert connection is not None
        ws = server.connection().ws
        ws.transport.pause_reading()  # reads nothing from here on
        alive = json.dumps({"usageMetadata": {"totalTokenCount": 1}})
        for n in range(300_000):
            if any(isinstance(e, Reconnecting) for e in events) or ws.state is not WsState.OPEN:
                break
            ws.protocol.send_ping(n.to_bytes(4, "big") * 31)
            if n % 1000 == 0:
                ws.protocol.send_text(alive.encode())
            ws.send_data()
            if n % 500 == 0:
                await asyncio.sleep(0)
                box = websocket_of(connection.session)
                held = max(held, box.transport.get_write_buffer_size() if box else 0)
        await asyncio.sleep(0.5)
    finally:
        await link.close()
    assert held <= UNSENT_HELD_LIMIT + 2**20, f"{held / 2**20:.0f} MB of pongs held unsent"
    assert any(isinstance(e, Reconnecting) for e in events), "the connection went on"
    (lost,) = [r for r in caplog.records if r.getMessage().startswith("connection lost")]
    assert "reads nothing" in lost.getMessage()


def unasked_audio(seconds: float) -> str:
    """A frame of reply audio nobody asked for (a model's proactive word)."""
    pcm = b"\x01\x00" * round(REPLY_RATE * seconds)
    blob = {"mimeType": pcm_mime(REPLY_RATE), "data": base64.b64encode(pcm).decode()}
    part = {"inlineData": blob}
    return json.dumps({"serverContent": {"modelTurn": {"parts": [part]}}})


async def test_a_reply_nobody_asked_for_before_each_close_does_not_reset_the_backoff(
    server: LiveServer,
) -> None:
    """A service that speaks unasked after every setup (a proactive model), then closes
    the connection: the reply made each connection count as one that carried a turn, so
    the box reconnected at once, about sixteen times a second, for as long as the session
    stayed open; it played the word each time, and every turn it played restarted the
    idle timer that would have closed the session. It must be paced as a connection
    that died young (0.5 s, 1 s, 2 s...)."""
    connections = await connections_in_three_seconds(server, [unasked_audio(0.1), BARE_END])
    assert connections <= 6, f"{connections} connections in 3 s"


async def test_a_whole_reply_nobody_asked_for_left_to_play_does_not_reset_the_backoff(
    server: LiveServer,
) -> None:
    """The same with more reply than the speaker holds, its end read before each close: the
    rest of it, carried on to the next connection to play there, made each connection count
    as one that carried a turn, and the box reconnected at once, without end."""
    frames = [unasked_audio(AHEAD_S + 2), BARE_END]
    connections = await connections_in_three_seconds(server, frames, Speaker())
    assert connections <= 6, f"{connections} connections in 3 s"


#: What the Gemini API closes with (1011) when the key's quota is used up.
QUOTA = (
    "You exceeded your current quota, please check your plan and billing details. For "
    "more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
)


async def test_a_quota_refusing_resumes_for_a_while_keeps_the_conversation(
    server: LiveServer,
) -> None:
    """Over its per-minute quota the service answers every setup with 1011. The box took
    that for the old connection still holding the session: after three refusals over
    4 s it threw the handle away, and once the quota had room again the person heard
    the "I forgot" earcon and the model had forgotten the conversation, though a fresh
    session is refused for quota just the same and the handle was good for hours."""
    events: list[Event] = []
    outbox = Outbox(hold_s=8)
    link = LiveLink(config_for(server), outbox, events.append, lambda *_: None)
    link.open(1)
    try:
        outbox.put("text", "remember the number seven")
        await until(lambda: link._handle is not None, within=10)
        server.config.refuse_setup = (CLOSE_INTERNAL, QUOTA)
        server.drop()
        for _ in range(20):  # presses now and then: each tries at once
            link.hurry()
            await asyncio.sleep(0.3)
        server.config.refuse_setup = None
        link.hurry()
        await until(lambda: any(isinstance(e, Reconnected | ConnectionLost) for e in events))
    finally:
        await link.close()
    (back,) = [e for e in events if isinstance(e, Reconnected | ConnectionLost)]
    assert back == Reconnected(session=1, history_lost=False)
    setups = [record.setup for record in server.log.connections()][1:]
    assert all(at(setup, "session_resumption", "handle") for setup in setups), "a fresh session"


def test_a_quota_close_is_named_as_such_not_as_an_internal_error() -> None:
    """The journal said "the service had an internal error": the owner waited for Google
    to mend it, when it was their key's quota (the reason says so, far along the line)."""
    said = describe_failure(errors.APIError(CLOSE_INTERNAL, {"message": QUOTA}))
    assert said.startswith("a quota or rate limit of the key was reached"), said


async def test_a_connect_timeout_above_ten_seconds_is_honoured() -> None:
    """An owner on a slow link (a Pi on LTE) raised `connect_timeout_s` to 20: every
    connect still failed at 10 s, websockets' own bound on its opening handshake, and the
    journal said "no answer from the Live API in time" as before."""
    held: list[asyncio.StreamWriter] = []

    async def accept_and_say_nothing(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)  # a TLS handshake that never gets an answer

    silent = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    cfg = Config(
        live=LiveConfig(base_url=f"https://127.0.0.1:{port}", connect_timeout_s=20),
        api_key=Secret("AIza-test"),
    )
    events: list[Event] = []
    link = LiveLink(cfg, Outbox(5), events.append, lambda *_: None)
    link.open(1)
    try:
        await asyncio.sleep(11)
        failed = [e for e in events if isinstance(e, ConnectFailed)]
        assert not failed, f"gave up before connect_timeout_s: {failed}"
    finally:
        await link.close()
        for writer in held:
            writer.close()
        silent.close()
        await silent.wait_closed()


async def test_a_turn_given_up_on_between_connections_is_not_opened_again_on_the_next(
    server: LiveServer,
) -> None:
    """Push-to-talk: the press's activityStart went out, the connection dropped, and the
    rest of the question (its end too) waited for the next one; the reply timer gave up
    on it (the error beep) and the box dropped what waited. The next connection opened the
    person's turn again all the same, and nothing ever ended it: the service waited for
    the end of a question nobody was asking, and a goAway's switch waited for its end."""
    events: list[Event] = []
    outbox = Outbox(hold_s=8)
    link = LiveLink(config_for(server), outbox, events.append, lambda *_: None)
    link.open(1)
    try:
        await until(lambda: SetupComplete(session=1) in events, within=10)
        outbox.put("activity_start")
        outbox.put("audio", b"\x01\x00" * 1600)
        await server.wait_for(lambda: "audio" in server.kinds(direction="in"), 10)
        server.drop()
        await until(lambda: any(isinstance(e, Reconnecting) for e in events), within=10)
        outbox.put("activity_end")  # the release, held for the next connection
        outbox.clear()  # the reply timer gave up: what waited is dropped (DropOutbox) ...
        link.drop_turn()  # ... and so is the person's turn it ended
        await until(lambda: any(isinstance(e, Reconnected) for e in events), within=15)
        await asyncio.sleep(0.3)
    finally:
        await link.close()
    assert server.kinds(conn=2, direction="in") == ["setup"], "a turn opened again"


# ---- a tool's answer and a press crossing on the wire ------------------------------------


async def test_a_press_as_the_tool_answers_does_not_end_the_session(
    server: LiveServer, gate: Gate,
) -> None:
    """Push-to-talk: the tool finishes just as the person presses again. The press went out
    first; the service withdrew the call for it, and the box's answer crossed the
    withdrawal on the wire: an answer to an id the service no longer knows."""
    server.queue_tool_call("slow")
    async with talking(server, tools=slow_tool(gate)) as talk:
        talk.ask()
        await gate.entered()
        talk.link.supersede_reply()
        talk.outbox.put("activity_start")  # the press: out before the tool's answer
        gate.opened.set()  # the answer follows it, before the withdrawal is read
        await asyncio.sleep(0.5)
        talk.outbox.put("activity_end")
        await until(lambda: any(isinstance(e, TurnComplete | ConnectionLost | Reconnecting)
                                for e in talk.events), within=10)
    assert not any(isinstance(e, ConnectionLost | Reconnecting) for e in talk.events), (
        talk.events)


# ---- a home network that misbehaves under a box left running -----------------------------


async def first_outcome(cfg: Config) -> Event:
    """What a press's session says first: SetupComplete, or why it failed."""
    events: list[Event] = []
    link = LiveLink(cfg, Outbox(5), events.append, lambda *_: None)
    link.open(1)
    try:
        await until(lambda: bool(events), within=15)
    finally:
        await link.close()
    return events[0]


@pytest.fixture
def ipv6_blackhole(server: LiveServer) -> Iterator[int]:
    """[::1] at the server's port, dropping every SYN (its one-place accept queue is
    full): an IPv6 route that goes nowhere, as after a router reboot gave the home a new
    prefix while the box still uses the old one, or an ISP whose IPv6 is down."""
    with socket.socket(socket.AF_INET6) as listener:
        listener.bind(("::1", server.port))
        listener.listen(0)
        with socket.create_connection(("::1", server.port)):
            yield server.port


def dual_stack(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`host` resolves as the Live API's host does on a box with a global IPv6 address:
    its AAAA first (RFC 6724), then its A."""
    resolve = socket.getaddrinfo

    def both(name: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if name != host:
            return resolve(name, port, *args, **kwargs)
        v6 = resolve("::1", port, socket.AF_INET6, socket.SOCK_STREAM)
        v4 = resolve("127.0.0.1", port, socket.AF_INET, socket.SOCK_STREAM)
        return v6 + v4

    monkeypatch.setattr(socket, "getaddrinfo", both)


async def test_a_broken_ipv6_route_falls_back_to_ipv4_before_the_connect_times_out(
    server: LiveServer, ipv6_blackhole: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The home's IPv6 goes nowhere while IPv4 works (a browser on the same Wi-Fi loads
    every page: it tries IPv4 after a moment). The box tried the AAAA address alone until
    `connect_timeout_s` ran out: every press was the error pattern and "no answer from
    the Live API in time", for as long as the IPv6 route stayed broken."""
    dual_stack("localhost", monkeypatch)
    cfg = Config(
        live=LiveConfig(base_url=f"https://localhost:{ipv6_blackhole}"),  # default timeout
        api_key=Secret(server.api_key),
    )
    pressed = time.monotonic()
    outcome = await first_outcome(cfg)
    took = time.monotonic() - pressed
    assert isinstance(outcome, SetupComplete), outcome
    assert took < 2.0, f"connected (and closed) after {took:.1f} s"


async def test_a_proxy_in_the_environment_carries_the_session(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An owner behind a proxy sets HTTPS_PROXY for the unit: the Live session goes
    through it (websockets reads the environment)."""
    async with proxy() as (port, asked):
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
        outcome = await first_outcome(config_for(server))
    assert isinstance(outcome, SetupComplete), outcome
    assert asked and asked[0].startswith(b"CONNECT 127.0.0.1:")


async def test_an_http_base_url_is_reached_as_the_endpoint_and_the_proxy_say(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`base_url = "http://..."`: the SDK opens wss:// to the same host and port (a key
    or a Vertex AI project is always there), so HTTPS_PROXY carries it, as `endpoint`
    and `proxy_of` (the doctor's, a timeout's resolver check) take it."""
    url = server.base_url.replace("https://", "http://")
    cfg = config_for(server, live={"base_url": url})
    assert endpoint(cfg) == ("127.0.0.1", server.port)
    async with proxy() as (port, asked):
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
        assert proxy_of(cfg) == ("127.0.0.1", port)
        outcome = await first_outcome(cfg)
    assert isinstance(outcome, SetupComplete), outcome
    assert asked == [f"CONNECT 127.0.0.1:{server.port} HTTP/1.1".encode()]


async def test_a_proxy_that_is_down_is_named_not_the_live_api_host(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTPS_PROXY names a proxy that is down (or a stale setting the owner forgot): the
    error state and the journal said "TCP: connection refused by the Live API host", and
    the owner looked at the service, the key and the firewall, never at the proxy."""
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{closed_port()}")
    outcome = await first_outcome(config_for(server))
    assert isinstance(outcome, ConnectFailed)
    assert "proxy" in outcome.reason, outcome.reason
    assert "Live API host" not in outcome.reason


async def test_a_proxy_that_wants_credentials_is_said_as_such(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proxy answers CONNECT with 407: the failure is the proxy's, named with its
    status, not "other" with a class name."""
    async with proxy(b"HTTP/1.1 407 Proxy Authentication Required") as (port, _):
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
        outcome = await first_outcome(config_for(server))
    assert isinstance(outcome, ConnectFailed)
    assert "proxy" in outcome.reason and "407" in outcome.reason, outcome.reason
    assert "InvalidProxyStatus" not in outcome.reason


def test_a_file_the_connect_cannot_read_is_not_blamed_on_the_proxy(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Vertex AI's credentials file the service may not read fails the connect with a
    PermissionError naming the file: behind a proxy it was said as "proxy: cannot reach
    127.0.0.1:3128: Permission denied", and the owner looked at the proxy."""
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    cfg = config_for(server)
    denied = PermissionError(errno.EACCES, "Permission denied", "/etc/live-appliance/sa.json")
    assert through_proxy(cfg, denied) is denied
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    assert "127.0.0.1:3128" in str(through_proxy(cfg, refused))


async def test_a_slow_proxy_is_not_blamed_on_the_boxs_resolver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Behind a proxy the box often cannot resolve outside names at all: the proxy does.
    A connect that timed out (the proxy slow) was then checked against the Live API's
    host with the box's resolver, and the journal said DNS, sending the owner to a
    resolver the box never needed."""
    held: list[asyncio.StreamWriter] = []

    async def say_nothing(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    silent = await asyncio.start_server(say_nothing, "127.0.0.1", 0)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{silent.sockets[0].getsockname()[1]}")
    live = LiveConfig(base_url="https://live.proxy-only.invalid", connect_timeout_s=0.5)
    try:
        outcome = await first_outcome(Config(live=live, api_key=Secret("AIza-test")))
    finally:
        for writer in held:
            writer.close()
        silent.close()
    assert isinstance(outcome, ConnectFailed)
    assert not outcome.reason.startswith("DNS"), outcome.reason


@contextlib.asynccontextmanager
async def answering(answer: bytes, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Config]:
    """A TLS server the box trusts that answers the WebSocket upgrade with `answer` (a
    whole HTTP response): a network whose sign-in page or proxy answers for the service.
    Yields a configuration pointed at it."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    ca = LocalCA()
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_file))
    listening = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ca.server_context())
    port = listening.sockets[0].getsockname()[1]
    try:
        live = LiveConfig(base_url=f"https://127.0.0.1:{port}")
        yield Config(live=live, api_key=Secret("AIza-test"))
    finally:
        listening.close()
        ca.cleanup()


@pytest.mark.parametrize(
    "location", ["http://portal.lan/login?mac=dc:a6:32:00:00:01", "https://portal.lan/login"]
)
async def test_a_redirect_to_a_sign_in_page_is_named_as_such(
    monkeypatch: pytest.MonkeyPatch, location: str
) -> None:
    """A hotel's or a school's network redirects the upgrade to its sign-in page: the
    error state said "InvalidURI: http://portal.lan/login?mac=... isn't a valid URI:
    scheme isn't ws or wss" (LIVE_FAILURE=other), the page's address quoted whole."""
    answer = f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
    async with answering(answer.encode(), monkeypatch) as cfg:
        outcome = await first_outcome(cfg)
    assert isinstance(outcome, ConnectFailed)
    assert "redirect" in outcome.reason and "portal.lan" in outcome.reason, outcome.reason
    assert "InvalidURI" not in outcome.reason and "mac=" not in outcome.reason


@pytest.mark.parametrize(
    "status", ["200 OK", "511 Network Authentication Required"], ids=["html", "511"]
)
async def test_a_network_that_wants_a_sign_in_is_not_the_live_api_refusing(
    monkeypatch: pytest.MonkeyPatch, status: str
) -> None:
    """A page in place of the upgrade (200 with HTML, or 511, the status made for a
    network that wants a sign-in) was "the Live API refused the connection": the owner
    looked at the key and the service, not at the network."""
    answer = f"HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: 0\r\n\r\n"
    async with answering(answer.encode(), monkeypatch) as cfg:
        outcome = await first_outcome(cfg)
    assert isinstance(outcome, ConnectFailed)
    assert "Live API refused" not in outcome.reason, outcome.reason
    assert "sign-in" in outcome.reason, outcome.reason


async def test_a_name_the_resolver_refuses_at_once_is_named_a_dns_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Wi-Fi up, no uplink, and a router whose resolver says so at once (or a typo in
    `base_url`): the press beeps and `ctl status` must say DNS, not a generic network."""
    host = "live.refused-test.invalid"
    unknown_name(monkeypatch, host, socket.EAI_AGAIN, "Temporary failure in name resolution")
    live = LiveConfig(base_url=f"https://{host}", connect_timeout_s=5)
    failed = await first_outcome(Config(live=live, api_key=Secret("AIza-test")))
    assert isinstance(failed, ConnectFailed)
    assert failed.reason == (
        "DNS: cannot resolve the Live API host (Temporary failure in name resolution)"
    )


async def _connect_failure(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, setting: str
) -> tuple[str, list[logging.LogRecord]]:
    """A press with HTTPS_PROXY set to `setting`: the error state's reason and the
    journal's "cannot connect" records (the try once more, then the error)."""
    only_proxy(monkeypatch, setting)
    cfg = Config(live=LiveConfig(connect_timeout_s=5), api_key=Secret("AIza-test"))
    with caplog.at_level(logging.INFO, logger="device"):
        failed = await first_outcome(cfg)
    assert isinstance(failed, ConnectFailed)
    said = [r for r in caplog.records if r.getMessage().startswith("cannot connect")]
    assert said[-1].levelno == logging.ERROR, said
    return failed.reason, said


async def test_a_proxy_password_stays_out_of_the_journal_and_ctl_status(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """HTTPS_PROXY with the proxy's login, and a path websockets refuses: the error line,
    its LIVE_ERROR field and the reason `ctl status` shows quoted the password whole."""
    reason, said = await _connect_failure(
        monkeypatch, caplog, "http://alice:pr0xy-pa55word@proxy.lan:3128/login"
    )
    for text in (reason, said[-1].LIVE_ERROR, *(record.getMessage() for record in said)):
        assert "pr0xy-pa55word" not in text, text
        assert "alice:" in text and "@proxy.lan:3128" in text, text  # which proxy, still


@pytest.mark.parametrize(
    "setting",
    [
        "alice:pr0xy-pa55word@proxy.lan:3128",  # curl's way: no http://
        "http://alice:pr0xy@pa55word@proxy.lan:3128/login",  # an '@' in the password
    ],
)
async def test_a_proxy_password_written_as_curl_takes_it_stays_out_of_the_journal(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, setting: str
) -> None:
    """The setting websockets cannot use is quoted whole in the proxy failure's line: its
    password (or what follows an '@' in it) reached the journal and `ctl status`."""
    reason, said = await _connect_failure(monkeypatch, caplog, setting)
    texts = (reason, said[-1].LIVE_ERROR, *(r.getMessage() for r in said),
             *(r.exc_text or "" for r in said))
    for text in texts:
        assert "pa55word" not in text, text
    assert "alice:" in reason and "@proxy.lan:3128" in reason, reason  # which proxy, still
    assert said[-1].LIVE_FAILURE == "proxy"


@pytest.mark.parametrize(
    ("setting", "why"),
    [
        ("http://[bad", "Invalid IPv6 URL"),
        ("http://proxy.lan:31280000", "Port out of range 0-65535"),
    ],
)
async def test_a_proxy_setting_urllib_cannot_parse_is_a_proxy_failure(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, setting: str, why: str
) -> None:
    """HTTPS_PROXY with a typo urllib cannot parse (a bracket left open, a port too long):
    websockets raises a bare ValueError, and the journal, LIVE_ERROR and `ctl status`
    said "the service sent a message that cannot be decoded" (LIVE_FAILURE=undecodable):
    the owner looked at the service, not at the setting."""
    reason, said = await _connect_failure(monkeypatch, caplog, setting)
    assert reason == f"proxy: HTTPS_PROXY's {setting} cannot be used: {why}"
    assert said[-1].LIVE_FAILURE == "proxy"


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        # A password pasted with a character a URL gives a meaning to, unencoded.
        ("http://alice:pr0xy#pa55word@proxy.lan:3128",
         "HTTPS_PROXY's http://alice:***@proxy.lan:3128 cannot be used: fragment is meaningless"),
        ("http://alice:pr0xy/pa55word@proxy.lan:3128",
         "HTTPS_PROXY's http://alice:***@proxy.lan:3128 cannot be used: path is meaningless"),
        ("http://alice:pr0xy?pa55word@proxy.lan:3128",
         "HTTPS_PROXY's http://alice:***@proxy.lan:3128 cannot be used: query is meaningless"),
        ("http://proxy.lan:3128x",  # a letter in the port
         "HTTPS_PROXY's http://proxy.lan:3128x cannot be used: Port could not be cast to "
         "integer value as '3128x'"),
    ],
)
async def test_a_proxy_setting_the_client_cannot_be_built_with_is_said_as_the_setting(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, setting: str, said: str
) -> None:
    """The SDK's HTTP client reads HTTPS_PROXY as it is built, and refuses these: the
    journal ("no session: the Live API client cannot be built") and `ctl status` said
    "Invalid port: 'pr0xy'", the password's first part taken for a port, without
    LIVE_FAILURE=proxy and without naming HTTPS_PROXY."""
    only_proxy(monkeypatch, setting)
    cfg = Config(live=LiveConfig(connect_timeout_s=5), api_key=Secret("AIza-test"))
    with caplog.at_level(logging.INFO, logger="device"):
        lost = await first_outcome(cfg)
    assert isinstance(lost, ConnectionLost), lost
    assert lost.reason == f"proxy: {said}"
    line = [r for r in caplog.records if r.getMessage().startswith("no session")][-1]
    assert line.LIVE_FAILURE == "proxy"
    assert all("pr0xy" not in r.getMessage() for r in caplog.records)
    assert all("pa55word" not in r.getMessage() for r in caplog.records)


async def test_a_proxy_setting_websockets_cannot_use_is_a_proxy_failure(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """HTTPS_PROXY=proxy.lan:3128 (curl's way, without http://): the owner filtering on
    LIVE_FAILURE=proxy (README) found nothing; the line said only "InvalidProxy"."""
    reason, said = await _connect_failure(monkeypatch, caplog, "proxy.lan:3128")
    assert said[-1].LIVE_FAILURE == "proxy"
    assert reason == (
        "proxy: HTTPS_PROXY's proxy.lan:3128 cannot be used: scheme proxy.lan isn't supported"
    )


#: Control characters no printable line holds: C0 (line breaks, ESC, BEL), C1, and the
#: bidi overrides that reverse what follows on a terminal.
UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@pytest.mark.parametrize("code", [CLOSE_POLICY, CLOSE_INTERNAL])
async def test_a_close_reason_is_shown_as_one_printable_line(
    server: LiveServer, caplog: pytest.LogCaptureFixture, code: int
) -> None:
    """The service's close reason went as it was into the error state's reason, which `ctl
    status` prints to the owner's terminal (an escape sequence in it acted on the terminal,
    a line break split the state's line) and into the journal's line and LIVE_ERROR (which
    journalctl shows as "[N B blob data]" for an escape: the why of the error unreadable)."""
    reason = "Deadline\nexpired \x1b[2J\x1b]0;owned\x07\u202eevo"
    server.config.refuse_setup = (code, reason)
    live = dataclasses.replace(config_for(server).live, reconnect_for_s=1, connect_timeout_s=5)
    cfg = dataclasses.replace(config_for(server), live=live)
    with caplog.at_level(logging.INFO, logger="device"):
        event = await asyncio.wait_for(first_outcome(cfg), 30)
    said = getattr(event, "reason", "")
    assert "Deadline\\x0aexpired \\x1b[2J" in said, said
    lines = summary_lines({"status": f"error: {said}"})
    assert not any(UNPRINTABLE.search(line) for line in lines), lines
    errors_said = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors_said
    for record in errors_said:
        assert not UNPRINTABLE.search(record.getMessage()), record.getMessage()
        assert not UNPRINTABLE.search(str(getattr(record, "LIVE_ERROR", ""))), record.LIVE_ERROR


async def test_a_client_that_cannot_be_built_is_said_whatever_the_base_urls_port(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Vertex AI's credentials missing, and GOOGLE_VERTEX_BASE_URL's port a typo: the look
    at HTTPS_PROXY after the failed build raised in turn, the build's thread died with a
    traceback, and its outcome never reached the loop: the press waited for a client for
    ever, and every press after it too, until the service restarted."""
    monkeypatch.setenv("GOOGLE_VERTEX_BASE_URL", "https://127.0.0.1:99999")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    live = LiveConfig(backend="vertex", project="p", location="l", connect_timeout_s=5)
    said = await first_outcome(Config(live=live))
    assert isinstance(said, ConnectionLost), said
    assert said.reason.startswith("Vertex AI credentials: "), said.reason


def test_a_close_without_a_reason_is_said_without_a_dangling_colon() -> None:
    """The service closes with its code alone (no reason given): the line `ctl status`
    and LIVE_ERROR say ends at the code, not at "close code 1011: " as if a reason had
    been cut off."""
    closed = ConnectionClosedError(Close(CLOSE_INTERNAL, ""), None)
    line = describe_failure(closed)
    assert line.endswith(f"(close code {CLOSE_INTERNAL})"), line
    assert failure_fields(closed)["LIVE_ERROR"] == line


async def test_the_restart_earcon_waits_for_the_release_of_a_press_held_through_it(
    tmp_path: Path,
) -> None:
    """Push-to-talk, a goAway mid-question whose resumption handle the service refused:
    the new session started afresh, and its earcon played at once, into the question the
    held button was still sending (the box's own beep in the person's words). It plays
    once the button is up, after the end-of-turn earcon."""
    restart, listen_end = earcon(Earcon.RESTART), earcon(Earcon.LISTEN_END)
    async with running(tmp_path) as box:
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        box.mic.record(CHUNK)
        await box.settle()
        box.link.deliver(Reconnecting, reason="goAway", reply_lost=False)
        box.link.deliver(Reconnected, history_lost=True)
        box.mic.record(CHUNK)
        await box.settle()
        assert restart not in box.speaker.buffered + box.speaker.heard, "beeped mid-question"
        await box.ctl("release")
        box.mic.record(CHUNK)
        await box.settle()
        played = bytes(box.speaker.buffered + box.speaker.heard)
        assert played.count(restart) == 1, "the restart never said"
        assert played.index(listen_end) < played.index(restart)
