"""GOOGLE_GEMINI_BASE_URL / GOOGLE_VERTEX_BASE_URL as the environment gives them: `[live]
base_url` is checked when the configuration loads, these are not. One the box cannot use
(a port out of range, a bracket left open, no host) is the owner's setting, said as one:
through the local server and the real SDK."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import google.auth
import google.auth.credentials
import pytest
from helpers import trusted_server
from test_live_session import first_outcome
from test_vertex_token import vertex_config
from wire import config_for

from device import config
from device.ask import AskError, ask
from device.config import Config, LiveConfig, Secret
from device.doctor.network import check_network
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status
from device.live.endpoint import endpoint
from device.states import ConnectFailed
from rig.server.server import LiveServer

#: Base URLs `[live] base_url` would refuse at load, with why the box cannot use them: a
#: port with a digit too many, an IPv6 address whose bracket was left open (urllib cannot
#: read it at all), a port without its host, a name with an empty label (the IDNA codec
#: refuses it: websockets encodes a host that is not ASCII, Python's resolver every host).
UNUSABLE = {
    "https://127.0.0.1:443443": "Port out of range 0-65535",
    "https://[::1:443": "Invalid IPv6 URL",
    "https://:8443": "it names no host",
    "https://bücher..example": "its host is not a valid name (an empty or too long label)",
    "https://live..example.com": "its host is not a valid name (an empty or too long label)",
}


@pytest.fixture(params=UNUSABLE)
async def cfg(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Config, str]]:
    """The local server's key, its address only in the environment, unusable; and what
    the box should say of it."""
    async with trusted_server(monkeypatch, pace=0, reply_seconds=0.2) as server:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", request.param)
        base = config_for(server)
        said = f"GOOGLE_GEMINI_BASE_URL's {request.param} cannot be used: "
        yield (
            dataclasses.replace(base, live=dataclasses.replace(base.live, base_url=None)),
            said + UNUSABLE[request.param],
        )


async def test_a_base_url_variable_the_box_cannot_use_is_said_as_the_setting(
    cfg: tuple[Config, str],
) -> None:
    """A press said "the service sent a message that cannot be decoded (Port out of range
    0-65535)" or "(Invalid IPv6 URL)", or "InvalidURI: wss://:8443/ws/...", and was tried
    again: the service was never asked, and the owner looked at it."""
    config, words = cfg
    said = await first_outcome(config)
    assert isinstance(said, ConnectFailed), said
    assert said.reason == f"setting: {words}", said.reason


async def test_ask_says_a_base_url_variable_the_box_cannot_use_as_the_setting(
    cfg: tuple[Config, str],
) -> None:
    config, words = cfg
    with pytest.raises(AskError) as failed:
        await ask(config, ["hello"], on_reply=lambda *_: None)
    assert str(failed.value) == f"setup: setting: {words}"


async def test_the_doctor_says_a_base_url_variable_the_box_cannot_use_as_the_setting(
    cfg: tuple[Config, str],
) -> None:
    """The doctor's network check said "the check itself failed: ValueError: Port out of
    range 0-65535" and to report a bug, or "DNS: cannot resolve the Live API host" for
    no host at all."""
    config, words = cfg
    result = await check_network(Context(config, Options(), Progress()))
    assert result.status is Status.FAIL
    assert result.measured == f"setting: {words}", result.measured
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


async def test_a_base_url_variable_the_box_cannot_use_is_not_tried_again(
    cfg: tuple[Config, str], caplog: pytest.LogCaptureFixture
) -> None:
    """The owner's variable fails the same way at every try: a press was said "cannot
    connect (setting: ...): trying once more" and waited for the second try to fail too."""
    caplog.set_level(logging.INFO, "device")
    said = await first_outcome(cfg[0])
    assert isinstance(said, ConnectFailed), said
    tried_again = [r.getMessage() for r in caplog.records if "trying once more" in r.getMessage()]
    assert not tried_again, tried_again


def test_a_base_url_variable_without_a_port_is_reached_at_https_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A gateway named without a port is where the SDK opens wss:// (443): the doctor's
    connection check and a timed-out connect's lookup must ask for that port."""
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", "https://gateway.example.net/")
    assert endpoint(Config()) == ("gateway.example.net", 443)


#: Gateway URLs with a login whose password was pasted as written, each unusable (a port
#: the '/' or '@' leaves as letters, or out of range), and the password in them.
UNENCODED = {
    "https://gw:s3cret/Pw@gateway.lan:8443": "s3cret/Pw",
    "https://gw:s3c@ret@gateway.lan:443443": "s3c@ret",
}


def _leaks(text: str, password: str) -> list[str]:
    """The pieces of `password` (split at '@' and '/') that `text` holds in clear."""
    return [piece for piece in password.replace("/", "@").split("@") if piece in text]


@pytest.mark.parametrize("url", UNENCODED)
def test_a_configured_base_url_the_box_cannot_use_keeps_its_password_out_of_the_error(
    tmp_path: Path, url: str
) -> None:
    """`[live] base_url` refused at load quoted the URL whole: the password reached stderr,
    the journal and the doctor's output in clear (the mask took only a password without
    '@' or '/', or the part after its last '@')."""
    path = tmp_path / "config.toml"
    path.write_text(f"[live]\nbase_url = '{url}'\n")
    with pytest.raises(config.ConfigError) as caught:
        config.load(path)
    said = str(caught.value)
    assert "base_url: must be an http:// or https:// URL" in said, said
    assert "gw:***@gateway.lan" in said, said
    assert not _leaks(said, UNENCODED[url]), said


@pytest.mark.parametrize("url", UNENCODED)
async def test_a_base_url_variable_the_box_cannot_use_keeps_its_password_out_of_the_journal(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """GOOGLE_GEMINI_BASE_URL the box cannot use is said as the setting, at every press, in
    the journal and `ctl status`: quoted whole, the password with it."""
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", url)
    cfg = Config(live=LiveConfig(base_url=None), api_key=Secret("k" * 39))
    said = await first_outcome(dataclasses.replace(cfg))
    assert isinstance(said, ConnectFailed), said
    assert said.reason.startswith("setting: GOOGLE_GEMINI_BASE_URL's https://gw:***@gateway.lan"), (
        said.reason
    )
    assert not _leaks(said.reason, UNENCODED[url]), said.reason
