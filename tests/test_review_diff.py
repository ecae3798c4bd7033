"""A review of the day's changes: the cases they did not cover, through the local server
and the real SDK where the wire is concerned."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest
from test_live_session import first_outcome
from wire import config_for

from device.config import Config
from device.doctor.network import check_network
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status
from device.states import ConnectFailed
from rig.server.server import LiveServer

#: An IPv6 base URL whose bracket was left open: urllib cannot read it at all.
OPEN_BRACKET = "https://[::1:443"


@pytest.fixture
async def open_bracket(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Config]:
    """The local server's key, the Live API's address only in the environment: unreadable."""
    async with LiveServer(pace=0, reply_seconds=0.2) as server:
        monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", OPEN_BRACKET)
        base = config_for(server)
        yield dataclasses.replace(base, live=dataclasses.replace(base.live, base_url=None))


async def test_a_base_url_variable_with_a_bracket_left_open_is_said_as_the_setting(
    open_bracket: Config,
) -> None:
    """A press said "the service sent a message that cannot be decoded (Invalid IPv6
    URL)", and was tried again: the service was never asked, the owner's variable was
    wrong (a bad port was said so; `[live] base_url` with the same typo is refused at
    load)."""
    said = await first_outcome(open_bracket)
    assert isinstance(said, ConnectFailed), said
    assert said.reason.startswith("setting: GOOGLE_GEMINI_BASE_URL's"), said.reason


async def test_the_doctor_says_a_base_url_variable_with_a_bracket_left_open_as_the_setting(
    open_bracket: Config,
) -> None:
    """The doctor's network check said the check itself had failed, a bug to report."""
    result = await check_network(Context(open_bracket, Options(), Progress()))
    assert result.status is Status.FAIL
    assert result.measured.startswith("setting: GOOGLE_GEMINI_BASE_URL's"), result.measured
    assert "systemctl show -p Environment" in (result.fix or ""), result.fix
