"""A Live service that flaps for days at a box left alone: it accepts and closes at once,
talks unasked, refuses and comes back. The box must not hammer it, must not flood the
journal, and must come back to a press."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fakes import CHUNK, config, running
from google.genai import errors
from helpers import until
from wire import at, config_for

from device.config import Config, LiveConfig, Secret
from device.live.errors import describe_failure
from device.live.session import LiveLink
from device.live.wire import CLOSE_INTERNAL, REPLY_RATE, pcm_mime
from device.outbox import Outbox
from device.states import (
    ConnectFailed,
    ConnectionLost,
    Event,
    Reconnected,
    Reconnecting,
    SetupComplete,
)
from rig.server.server import LiveServer


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LiveServer]:
    async with LiveServer(pace=0, reply_seconds=0.2) as live:
        monkeypatch.setenv("SSL_CERT_FILE", live.ca_file)
        yield live


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


#: A tenth of a second of reply audio nobody asked for (a model's proactive word).
UNASKED_AUDIO = json.dumps(
    {
        "serverContent": {
            "modelTurn": {
                "parts": [
                    {
                        "inlineData": {
                            "mimeType": pcm_mime(REPLY_RATE),
                            "data": base64.b64encode(b"\x01\x00" * 2400).decode(),
                        }
                    }
                ]
            }
        }
    }
)
TURN_COMPLETE = json.dumps({"serverContent": {"turnComplete": True}})


async def test_a_reply_nobody_asked_for_before_each_close_does_not_reset_the_backoff(
    server: LiveServer,
) -> None:
    """A service that speaks unasked after every setup (a proactive model), then closes
    the connection: the reply made each connection count as one that carried a turn, so
    the box reconnected at once, about sixteen times a second, for as long as the session
    stayed open; it played the word each time, and every turn it played restarted the
    idle timer that would have closed the session. It must be paced as a connection
    that died young (0.5 s, 1 s, 2 s...)."""
    sabotage = asyncio.create_task(each_connection(server, [UNASKED_AUDIO, TURN_COMPLETE], 1011))
    link = LiveLink(config_for(server), Outbox(5), lambda _e: None, lambda *_: None)
    link.open(1)
    try:
        await asyncio.sleep(3.0)
        assert link.connections <= 6, f"{link.connections} connections in 3 s"
    finally:
        sabotage.cancel()
        await link.close()


async def test_a_question_the_reply_timer_gave_up_on_is_not_sent_when_the_link_comes_back(
    tmp_path: Path,
) -> None:
    """Push-to-talk; the connection drops and the question waits in the outbox for the
    next one. The reply timer runs out first: the error beep, idle. The link then came
    back within the same session and sent the old question, and its answer played out of
    the blue, well after the box had said it failed."""
    cfg = config(conversation={"reply_timeout_s": 0.05, "idle_timeout_s": 60})
    async with running(tmp_path, cfg) as box:
        await box.ctl("press")
        box.link.deliver(SetupComplete)
        box.link.deliver(Reconnecting, reason="Wi-Fi gone", reply_lost=False)
        for _ in range(3):
            box.mic.record(CHUNK)  # the question, held for the next connection
        await box.control.ask("release")
        box.mic.record(CHUNK)  # the chunk holding the release
        await box.settle()
        await until(lambda: box.state == "idle", within=3)  # given up: the error beep
        box.link.deliver(Reconnected)
        await box.settle()
        assert box.appliance.machine.session_open, "the session lives on (idle_timeout_s)"
        waiting = [item.kind for item in box.link.sent()]
        assert waiting == [], f"the question given up on still goes out: {waiting}"


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
