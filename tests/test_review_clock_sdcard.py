"""Review: a box left alone for months. Its wall clock (a Pi has none of its own: 1970,
or the last shutdown, until NTP sets it) and what it writes to the SD card."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar

import google.auth
import google.auth.credentials
import pytest
from google.genai import types
from helpers import until
from wire import config_for

from device.config import ToolsConfig
from device.live.session import LiveLink
from device.logs import LineBudget
from device.outbox import Outbox
from device.persist import StateFile
from device.states import Event, SetupComplete
from device.tools import ToolBox
from rig.server.server import LiveServer


class Actions:
    """The appliance's side of the tools: nothing asked of it here."""

    def volume(self) -> float:
        return 0.5

    def set_volume(self, level: float) -> None: ...

    def end_conversation(self) -> None: ...


async def ask_the_time(now: datetime) -> dict[str, Any]:
    toolbox = ToolBox(ToolsConfig(enabled=("get_time",)), Actions(), now=lambda: now)
    response = await toolbox.run(types.FunctionCall(id="call-1", name="get_time", args={}))
    assert response.response is not None
    return response.response


async def test_get_time_before_the_clock_is_set_does_not_tell_a_date() -> None:
    """A box that boots with no network starts at 1970 (or its last shutdown): asked the
    time, the model was told "1970-01-01, Thursday" and said so to the person."""
    response = await ask_the_time(datetime(1970, 1, 1, 0, 2, tzinfo=UTC))
    assert "date" not in response and "time" not in response, response
    assert "clock is not set" in response["error"]


async def test_get_time_once_the_clock_is_set_tells_it() -> None:
    cet = timezone(timedelta(hours=1), "CET")
    response = await ask_the_time(datetime(2027, 2, 1, 9, 30, tzinfo=cet))
    assert response["date"] == "2027-02-01" and response["time"] == "09:30"


def test_a_volume_set_to_what_it_is_writes_nothing_to_the_card(tmp_path: Path) -> None:
    """The model calls set_volume as often as it likes ("louder", "a bit louder", the same
    again): each call wrote and renamed the state file, the same bytes on the SD card."""
    state = StateFile(tmp_path / "state.json")
    state.save(volume=0.3)
    written = (tmp_path / "state.json").stat()
    for _ in range(3):
        state.save(volume=0.3)
    again = (tmp_path / "state.json").stat()
    assert (again.st_ino, again.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
    state.save(volume=0.4)
    assert state.load() == {"volume": 0.4}


def test_an_hour_of_a_chattering_button_writes_a_bounded_number_of_journal_lines() -> None:
    """A button that chatters (or a network that flaps) for months: at 50 lines a second
    from one part, the journal gets the burst and then PER_S, not all of them."""
    clock = [0.0]
    budget = LineBudget(clock=lambda: clock[0])
    passed = 0
    for tick in range(3600 * 50):
        clock[0] = tick / 50
        record = logging.LogRecord("device.appliance", logging.INFO, "", 0, "x", None, None)
        passed += budget.filter(record)
    assert passed <= LineBudget.BURST + 3600 * LineBudget.PER_S + 1


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
    async with LiveServer(pace=0, reply_seconds=0.2, bearer_tokens={"token-1"}) as server:
        monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)
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
