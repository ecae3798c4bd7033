"""Vertex AI's access token, refreshed every hour, on a box whose internet is down.

google-genai refreshes an expired token with asyncio.to_thread, in the loop's worker
pool, and google-auth gives the token server 120 s: each press through an outage left
a worker waiting on it, and the camera's start and the audio keeper's calls queued
behind them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import google.auth
import google.auth.credentials
import pytest
from fakes import FakeParts, running
from google.auth import exceptions as auth_errors
from helpers import trusted_server, until
from test_appliance import assert_no_task_left_behind
from test_credentials import CLOCK_REFUSAL_IDS, CLOCK_REFUSALS
from wire import config_for

from device import workers
from device.ask import AskError, ask
from device.config import Config
from device.doctor.network import check_network
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Result, Status
from device.hw.camera import CameraFeed
from device.live import credentials
from device.live.session import LiveLink
from device.outbox import Outbox
from device.states import ConnectFailed, Event, SetupComplete
from rig.server.server import DEFAULT_BEARER_TOKEN, LiveServer

VERTEX = {"backend": "vertex", "project": "p", "location": "l", "model": "gemini-3.8-live"}


class TokenServer:
    """Google's token server as the box reaches it: out of reach (each refresh waits,
    as requests waits on a connect into a black hole, until `back()`), then answering."""

    def __init__(self) -> None:
        self.reachable = threading.Event()
        self.waiting = 0  # refreshes waiting now
        self.asked = 0
        self.threads: set[str] = set()  # where each refresh ran

    def refresh(self, credentials: google.auth.credentials.Credentials) -> None:
        self.asked += 1
        self.threads.add(threading.current_thread().name)
        self.waiting += 1
        try:
            if not self.reachable.wait(timeout=60):
                raise auth_errors.TransportError("oauth2.googleapis.com: timed out")
        finally:
            self.waiting -= 1
        credentials.token = DEFAULT_BEARER_TOKEN
        credentials.expiry = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=1)

    def back(self) -> None:
        self.reachable.set()


@pytest.fixture
def token_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[TokenServer]:
    """Application default credentials whose token has expired, refreshed at `TokenServer`."""
    server = TokenServer()

    class Expired(google.auth.credentials.Credentials):
        def refresh(self, request: object) -> None:
            server.refresh(self)

    monkeypatch.setattr(google.auth, "default", lambda **_: (Expired(), "p"))
    try:
        yield server
    finally:
        server.back()  # no thread left waiting past the test


@pytest.fixture
async def live(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LiveServer]:
    async with trusted_server(monkeypatch, pace=0, reply_seconds=0.2) as server:
        yield server


def vertex_config(server: LiveServer) -> Config:
    cfg = config_for(server, live={**VERTEX, "connect_timeout_s": 0.5})
    return dataclasses.replace(cfg, api_key=None)


async def press(link: LiveLink, events: list[Event], session: int) -> Event:
    """A press, and what came of it (the session closed again)."""
    events.clear()
    link.open(session)
    try:
        await until(lambda: events, within=10)
    finally:
        await link.close()
    return events[0]


async def test_presses_in_an_outage_leave_the_camera_its_worker(
    live: LiveServer, token_server: TokenServer
) -> None:
    """Four presses with the internet down and the hour's token expired: each connect (two
    a press) left a worker of the pool waiting on the token server, and the camera of
    the fifth press did not start ("the camera did not answer"): the person was not seen."""
    asyncio.get_running_loop().set_default_executor(workers.Workers())
    events: list[Event] = []
    link = LiveLink(vertex_config(live), Outbox(5), events.append, lambda _item, _t: None)
    for session in range(1, 5):
        assert isinstance(await press(link, events, session), ConnectFailed)
    assert token_server.waiting, "no refresh waits: the outage is not one"
    camera = dataclasses.replace(Config().camera, source="synthetic", fps=4.0, linger_s=0)
    frames: list[bytes] = []
    failures: list[str] = []
    feed = CameraFeed(camera, lambda jpeg, _t: frames.append(jpeg), failures.append,
                      switch_timeout_s=2.0)
    feed.start_frames()
    try:
        await until(lambda: frames or failures, within=10)
    finally:
        await feed.shutdown()
    assert not failures, failures
    assert token_server.waiting <= 1, "a refresh waiting for every press"


async def test_once_the_token_server_answers_the_next_press_connects(
    live: LiveServer, token_server: TokenServer
) -> None:
    """The refresh the presses waited for answers once the internet is back: the next
    press connects with its token, which the SDK took as it was (had an upgrade made it
    refresh a valid token, that refresh would be in the loop's pool again)."""
    asyncio.get_running_loop().set_default_executor(workers.Workers())
    events: list[Event] = []
    link = LiveLink(vertex_config(live), Outbox(5), events.append, lambda _item, _t: None)
    assert isinstance(await press(link, events, 1), ConnectFailed)
    token_server.back()
    assert isinstance(await press(link, events, 2), SetupComplete), events
    assert token_server.threads == {credentials.THREAD}
    assert token_server.asked == 1


async def test_a_press_in_an_outage_names_the_token_server(
    live: LiveServer, token_server: TokenServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The journal said "cannot connect: no answer from the Live API in time": the Live
    API was never asked; the box waited for its token."""
    events: list[Event] = []
    link = LiveLink(vertex_config(live), Outbox(5), events.append, lambda _item, _t: None)
    failed = await press(link, events, 1)
    assert isinstance(failed, ConnectFailed)
    said = "network: Vertex AI credentials: the token server did not answer in 0.5 s"
    assert failed.reason == said
    (line,) = [r for r in caplog.records if r.getMessage().startswith("cannot connect")]
    assert line.LIVE_FAILURE == "network"


async def test_ask_in_an_outage_ends_at_its_timeout(
    live: LiveServer, token_server: TokenServer
) -> None:
    """`live-appliance ask` gave up at its connect timeout, then did not end: asyncio.run
    waited for the refresh left in the loop's pool, as long as the token server took
    (google-auth gives it 120 s). So did `doctor`'s network check."""
    outcome: list[BaseException] = []

    def run_ask() -> None:
        try:
            asyncio.run(ask(vertex_config(live), ["hello"], on_reply=lambda *_: None))
        except BaseException as exc:
            outcome.append(exc)

    command = threading.Thread(target=run_ask, daemon=True)
    command.start()
    await until(lambda: not command.is_alive(), within=15)
    assert token_server.waiting, "the token server answered: no outage"
    (failed,) = outcome
    assert isinstance(failed, AskError)
    assert "the token server did not answer in 0.5 s" in str(failed), failed  # not the Live API


async def test_the_doctor_in_an_outage_ends_at_its_timeout(
    live: LiveServer, token_server: TokenServer
) -> None:
    """The network check said "Live setup: no answer ..." and `doctor` did not end until
    the refresh left in the loop's pool gave up."""
    results: list[Result] = []

    def run_doctor() -> None:
        ctx = Context(vertex_config(live), Options(), Progress(spinner=False))
        results.append(asyncio.run(check_network(ctx)))

    command = threading.Thread(target=run_doctor, daemon=True)
    command.start()
    await until(lambda: not command.is_alive(), within=15)
    assert token_server.waiting, "the token server answered: no outage"
    (result,) = results
    assert result.status is Status.FAIL and result.measured.startswith("Live setup"), result
    assert "the token server did not answer in 0.5 s" in result.measured, result.measured
    assert result.fix is not None and "oauth2.googleapis.com" in result.fix, result.fix


@pytest.mark.parametrize("refusal", CLOCK_REFUSALS, ids=CLOCK_REFUSAL_IDS)
async def test_the_doctor_says_to_set_the_clock_not_to_renew_the_key(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch, refusal: Exception
) -> None:
    """A box whose clock is off (a Pi runs from its last shutdown's time until NTP has set
    it): the line named the clock, and the fix said "Renew the credentials: ... a new
    service account key file" (refused the same) or "Try again in a minute"."""

    class ClockOff(google.auth.credentials.Credentials):
        def refresh(self, request: object) -> None:
            raise refusal

    monkeypatch.setattr(google.auth, "default", lambda **_: (ClockOff(), "p"))
    ctx = Context(vertex_config(live), Options(), Progress(spinner=False))
    result = await check_network(ctx)
    assert result.status is Status.FAIL
    assert "check the clock" in result.measured, result.measured
    assert result.fix is not None and "timedatectl" in result.fix, result.fix
    assert "Renew" not in result.fix and "Try again" not in result.fix, result.fix


async def test_vertex_credentials_not_found_are_said_at_each_press(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """They are loaded with the client now: a box without them says so at each press (and
    at the start), and one given them meanwhile connects at the next press."""
    missing = auth_errors.DefaultCredentialsError("Your default credentials were not found.")
    found: list[google.auth.credentials.Credentials] = []

    class Valid(google.auth.credentials.Credentials):
        def refresh(self, request: object) -> None:
            self.token = DEFAULT_BEARER_TOKEN

    def default(**_: object) -> tuple[google.auth.credentials.Credentials, str]:
        if not found:
            raise missing
        return found[0], "p"

    monkeypatch.setattr(google.auth, "default", default)
    events: list[Event] = []
    link = LiveLink(vertex_config(live), Outbox(5), events.append, lambda _item, _t: None)
    failed = await press(link, events, 1)
    assert "default credentials were not found" in getattr(failed, "reason", ""), failed
    said = [r for r in caplog.records if "default credentials were not found" in r.getMessage()]
    assert said and getattr(said[0], "LIVE_FAILURE", None) == "credentials", said
    found.append(Valid())
    assert isinstance(await press(link, events, 2), SetupComplete), events


async def test_vertex_credentials_not_found_at_start_are_one_line_an_owner_can_filter(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    """The client is built at start, its credentials with it: the start's line about them
    carries LIVE_FAILURE=credentials, as a press's does."""

    def default(**_: object) -> tuple[google.auth.credentials.Credentials, str]:
        raise auth_errors.DefaultCredentialsError("Your default credentials were not found.")

    monkeypatch.setattr(google.auth, "default", default)
    async with running(tmp_path, vertex_config(live), parts_class=RealLinkParts):
        await until(lambda: any("cannot build" in r.getMessage() for r in caplog.records))
    (said,) = [r for r in caplog.records if "cannot build" in r.getMessage()]
    assert "default credentials were not found" in said.getMessage()
    assert getattr(said, "LIVE_FAILURE", None) == "credentials", said.__dict__


class RealLinkParts(FakeParts):
    """The box's parts, the Live link the real one."""

    def link(self, *args):  # type: ignore[no-untyped-def]
        return self._keep("link", super(FakeParts, self).link(*args))


async def test_a_stop_while_the_token_server_hangs_leaves_no_task_nobody_owns(
    live: LiveServer, token_server: TokenServer, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The internet down, a press, then `systemctl stop`: the refresh still waiting for the
    token server was a task nobody owned, and the stop said "tasks left behind at
    shutdown: Task-7", a bug's words with no name to look for. Its thread cannot be
    stopped: the stop leaves it, promptly, as it leaves a worker stuck in a driver."""
    async with running(tmp_path, vertex_config(live), parts_class=RealLinkParts) as box:
        await box.ctl("press")
        await until(lambda: token_server.waiting and box.state == "error", within=10)
    assert token_server.waiting, "the token server answered: no outage"
    assert_no_task_left_behind(caplog)


async def test_a_refresh_failing_after_its_press_gave_up_puts_no_bug_in_the_journal(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The internet down: a press's connect gives up at its timeout while the token's
    refresh still waits, which fails later (requests gives up on the token server). Nobody
    took that failure: once the next press had started a refresh of its own, asyncio put
    "Task exception was never retrieved" and the refresh's traceback in the journal at
    ERROR, a bug's words for an outage the press had already named."""
    answer = threading.Event()  # the token server answers (the first time, a failure)
    asked: list[int] = []

    class Expired(google.auth.credentials.Credentials):
        def refresh(self, request: object) -> None:
            asked.append(1)
            answer.wait(timeout=60)
            if len(asked) == 1:
                raise auth_errors.TransportError("oauth2.googleapis.com: timed out")
            self.token = DEFAULT_BEARER_TOKEN
            self.expiry = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=1)

    monkeypatch.setattr(google.auth, "default", lambda **_: (Expired(), "p"))
    events: list[Event] = []
    link = LiveLink(vertex_config(live), Outbox(5), events.append, lambda _item, _t: None)
    assert isinstance(await press(link, events, 1), ConnectFailed)
    answer.set()  # the first refresh fails now, its press long over
    await until(lambda: link._token is not None and not link._token.refreshing)
    assert isinstance(await press(link, events, 2), SetupComplete), events
    gc.collect()  # the refresh left behind is freed (its traceback holds it in a cycle)
    bugs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert not bugs, bugs
