"""GOOGLE_GEMINI_BASE_URL / GOOGLE_VERTEX_BASE_URL as the environment gives them: `[live]
base_url` is checked when the configuration loads, these are not. One with a port out of
range is the owner's setting, said as one: through the local server and the real SDK."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest
from test_live_session import first_outcome
from wire import config_for

from device.ask import AskError, ask
from device.config import Config
from device.doctor.network import check_network
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status
from device.states import ConnectFailed
from rig.server.server import LiveServer

#: A base URL whose port has a digit too many.
TYPO = "https://127.0.0.1:443443"
SAID = f"GOOGLE_GEMINI_BASE_URL's {TYPO} cannot be used: Port out of range 0-65535"


@pytest.fixture
async def cfg(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Config]:
    """The local server's key, its address only in the environment: with a typo."""
    async with LiveServer(pace=0, reply_seconds=0.2) as server:
        monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", TYPO)
        base = config_for(server)
        yield dataclasses.replace(base, live=dataclasses.replace(base.live, base_url=None))


async def test_a_base_url_variable_with_a_bad_port_is_said_as_the_setting(cfg: Config) -> None:
    """A press said "the service sent a message that cannot be decoded (Port out of range
    0-65535)": the service was never asked, and the owner looked at it."""
    said = await first_outcome(cfg)
    assert isinstance(said, ConnectFailed), said
    assert said.reason == f"setting: {SAID}", said.reason


async def test_ask_says_a_base_url_variable_with_a_bad_port_as_the_setting(cfg: Config) -> None:
    with pytest.raises(AskError) as failed:
        await ask(cfg, ["hello"], on_reply=lambda *_: None)
    assert str(failed.value) == f"setup: setting: {SAID}"


async def test_the_doctor_says_a_base_url_variable_with_a_bad_port_as_the_setting(
    cfg: Config,
) -> None:
    """The doctor's network check said "the check itself failed: ValueError: Port out of
    range 0-65535" and to report a bug."""
    result = await check_network(Context(cfg, Options(), Progress()))
    assert result.status is Status.FAIL
    assert result.measured == f"setting: {SAID}", result.measured
    assert "systemctl show -p Environment" in (result.fix or ""), result.fix
