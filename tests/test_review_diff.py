"""A review of the day's changes: the cases they did not cover, through the local server
and the real SDK where the wire is concerned."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator

import google.auth
import google.auth.credentials
import pytest
from test_live_session import first_outcome
from test_vertex_token import vertex_config
from wire import config_for

from device.config import Config
from device.doctor.network import check_network
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status
from device.states import ConnectFailed
from rig.server.server import LiveServer

#: Base URLs `[live] base_url` would refuse at load: an IPv6 address whose bracket was left
#: open (urllib cannot read it at all), a port without its host.
UNREADABLE = ["https://[::1:443", "https://:8443"]


@pytest.fixture(params=UNREADABLE)
async def unreadable(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> AsyncIterator[Config]:
    """The local server's key, the Live API's address only in the environment: unreadable."""
    async with LiveServer(pace=0, reply_seconds=0.2) as server:
        monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", request.param)
        base = config_for(server)
        yield dataclasses.replace(base, live=dataclasses.replace(base.live, base_url=None))


async def test_an_unreadable_base_url_variable_is_said_as_the_setting(
    unreadable: Config,
) -> None:
    """A press said "the service sent a message that cannot be decoded (Invalid IPv6
    URL)", or "InvalidURI: wss://:8443/ws/...", and was tried again: the service was never
    asked, the owner's variable was wrong (a bad port was said so; `[live] base_url` with
    the same typo is refused at load)."""
    said = await first_outcome(unreadable)
    assert isinstance(said, ConnectFailed), said
    assert said.reason.startswith("setting: GOOGLE_GEMINI_BASE_URL's"), said.reason


async def test_the_doctor_says_an_unreadable_base_url_variable_as_the_setting(
    unreadable: Config,
) -> None:
    """The doctor's network check said the check itself had failed, a bug to report."""
    result = await check_network(Context(unreadable, Options(), Progress()))
    assert result.status is Status.FAIL
    assert result.measured.startswith("setting: GOOGLE_GEMINI_BASE_URL's"), result.measured
    assert "systemctl show -p Environment" in (result.fix or ""), result.fix


async def test_a_vertex_base_url_variable_with_a_bad_port_is_not_said_refused(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """On Vertex AI a refusal loads the credentials anew and tries once more: the journal
    said "refused (setting: GOOGLE_VERTEX_BASE_URL's ... cannot be used ...): trying once
    more, the credentials loaded anew", and loaded them again, when nothing had been asked
    of the service and no credentials could mend the owner's variable."""
    caplog.set_level(logging.INFO, "device")
    loads = []

    def default(**_: object) -> tuple[google.auth.credentials.Credentials, str]:
        loads.append(1)
        return google.auth.credentials.AnonymousCredentials(), "p"

    monkeypatch.setattr(google.auth, "default", default)
    monkeypatch.setenv("GOOGLE_VERTEX_BASE_URL", "https://127.0.0.1:443443")
    async with LiveServer(pace=0, reply_seconds=0.2) as server:
        base = vertex_config(server)
        said = await first_outcome(
            dataclasses.replace(base, live=dataclasses.replace(base.live, base_url=None))
        )
    assert isinstance(said, ConnectFailed), said
    assert said.reason.startswith("setting: GOOGLE_VERTEX_BASE_URL's"), said.reason
    assert not [r for r in caplog.records if "refused" in r.getMessage()], caplog.text
    assert len(loads) == 1, "the credentials were loaded again"
