"""A box left alone for months, as it authenticates: a key the service stops taking,
Vertex AI credentials revoked, through the real SDK against the local server.

The Gemini API closes a Live connection whose key is not valid, expired or deleted
with 1007 (INVALID_ARGUMENT), "API key not valid. Please pass a valid API key.", not
1008: that is the key, neither a setting refused nor a resumption handle forgotten.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import google.auth
import google.auth.credentials
import pytest
from google.auth import exceptions as auth_errors
from google.genai import errors
from helpers import until
from wire import config_for

from device.doctor.network import check_network
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status
from device.live.errors import describe_failure, is_refusal, is_unknown_handle
from device.live.session import LiveLink
from device.live.wire import CLOSE_INVALID
from device.outbox import Outbox
from device.states import ConnectionLost, Event, Reconnected, SetupComplete
from rig.server.server import LiveServer

#: What the Gemini API says, closing with 1007, of a key it does not take.
BAD_KEY = "API key not valid. Please pass a valid API key."
EXPIRED_KEY = "API key expired. Please renew the API key."


@pytest.mark.parametrize("reason", [BAD_KEY, EXPIRED_KEY])
def test_a_key_refused_with_1007_is_said_to_be_the_key(reason: str) -> None:
    """The journal and `ctl status` say so of a key revoked months after the install,
    not "a setting or a message was refused as invalid"."""
    refused = errors.APIError(CLOSE_INVALID, {"message": reason})
    assert describe_failure(refused).startswith("the service refused the API key"), (
        describe_failure(refused)
    )
    assert is_refusal(refused)
    assert not is_unknown_handle(refused)


async def test_a_key_revoked_mid_conversation_is_one_line_and_no_fresh_session(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The key is revoked while a conversation is open; the service moves it to a new
    connection, and refuses the resume (1007, the key). Not a handle the service forgot
    ("cannot resume the session ...: starting a new one", a second connection): one
    try, and the error naming the key."""
    events: list[Event] = []
    outbox = Outbox(hold_s=8)
    link = LiveLink(config_for(server), outbox, events.append, lambda _item, _t: None)
    link.open(1)
    try:
        await until(lambda: any(isinstance(e, SetupComplete) for e in events), within=10)
        outbox.put("text", "remember the number seven")
        await until(lambda: link._handle is not None, within=10)
        server.config.refuse_setup = (CLOSE_INVALID, BAD_KEY)  # the key revoked
        before = len(server.log.connections())
        caplog.clear()
        with caplog.at_level(logging.INFO):
            server.drop()
            ends = ConnectionLost | Reconnected
            await until(lambda: any(isinstance(e, ends) for e in events), within=10)
    finally:
        await link.close()
    lost = next(e for e in events if isinstance(e, ends))
    assert isinstance(lost, ConnectionLost)
    assert lost.reason.startswith("the service refused the API key"), lost.reason
    said = [r.getMessage() for r in caplog.records if r.name.startswith("device")]
    assert not any("starting a new one" in line for line in said), said
    assert len(server.log.connections()) - before == 1  # one try, no fresh session


def doctor_context(server: LiveServer, **live: Any) -> Context:
    cfg = config_for(server, live=live)
    return Context(cfg, Options(), Progress(spinner=False))


async def test_the_doctor_says_to_check_the_key_when_the_key_is_refused_with_1007(
    server: LiveServer,
) -> None:
    """`doctor`'s fix for it names the key, not "A setting was refused: check [live]
    model, voice and language." (settings that were right)."""
    server.config.refuse_setup = (CLOSE_INVALID, BAD_KEY)
    result = await check_network(doctor_context(server))
    assert result.status is Status.FAIL
    assert "refused the API key" in result.measured, result.measured
    assert result.fix is not None and "API key" in result.fix, result.fix


class Revoked(google.auth.credentials.Credentials):
    """Application default credentials whose refresh token was revoked."""

    def refresh(self, request: object) -> None:
        raise auth_errors.RefreshError(
            "invalid_grant: Token has been expired or revoked.", {"error": "invalid_grant"}
        )


async def test_the_doctor_does_not_say_try_again_later_for_revoked_vertex_credentials(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key check passes (the credentials file is there); the network check fails
    with "Vertex AI credentials: invalid_grant ...", and its fix is to renew them, not
    "Try again in a minute": no minute helps a revoked token."""
    monkeypatch.setattr(google.auth, "default", lambda **_: (Revoked(), "p"))
    ctx = doctor_context(server, backend="vertex", project="p", location="l")
    ctx = dataclasses.replace(ctx, cfg=dataclasses.replace(ctx.cfg, api_key=None))
    result = await check_network(ctx)
    assert result.status is Status.FAIL
    assert "Vertex AI credentials: invalid_grant" in result.measured, result.measured
    assert result.fix is not None and "Try again in a minute" not in result.fix, result.fix
    assert "credentials" in result.fix.lower(), result.fix


class Unavailable(google.auth.credentials.Credentials):
    """Application default credentials whose refresh meets a token server that answers,
    busy (HTTP 503): google-auth raises a RefreshError it calls retryable."""

    def refresh(self, request: object) -> None:
        raise auth_errors.RefreshError(
            "Service Unavailable", {"error": "unavailable"}, retryable=True
        )


async def test_the_doctor_names_a_busy_token_server_not_credentials_to_renew(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Google's token server answering 503: the credentials are fine, the network check
    fails at the token server (its fix names it), not as credentials to renew."""
    monkeypatch.setattr(google.auth, "default", lambda **_: (Unavailable(), "p"))
    ctx = doctor_context(server, backend="vertex", project="p", location="l")
    ctx = dataclasses.replace(ctx, cfg=dataclasses.replace(ctx.cfg, api_key=None))
    result = await check_network(ctx)
    assert result.status is Status.FAIL
    assert "network: Vertex AI credentials: Service Unavailable" in result.measured, (
        result.measured
    )
    assert result.fix is not None and "token server" in result.fix, result.fix
    assert "renew" not in result.fix.lower(), result.fix


#: What the token server, or its certificate, says to a box whose clock is off.
CLOCK_REFUSALS = [
    auth_errors.RefreshError(
        "invalid_grant: Invalid JWT: Token must be a short-lived token (60 minutes) and "
        "in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
        {"error": "invalid_grant"},
    ),
    auth_errors.TransportError(
        "HTTPSConnectionPool(host='oauth2.googleapis.com', port=443): Max retries "
        "exceeded with url: /token (Caused by SSLError(SSLCertVerificationError(1, "
        "'[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: certificate is "
        "not yet valid (_ssl.c:1006)')))"
    ),
]
CLOCK_REFUSAL_IDS = ["jwt-iat", "tls-not-yet-valid"]


@pytest.mark.parametrize("failure", CLOCK_REFUSALS, ids=CLOCK_REFUSAL_IDS)
def test_vertex_credentials_refused_for_the_boxs_clock_point_at_the_clock(
    failure: Exception,
) -> None:
    """A Pi has no clock of its own: after months unplugged, fake-hwclock starts it weeks
    behind until NTP has set it. The service account's signed request is then out of
    its timeframe at the token server, or the token server's certificate not yet valid:
    as the Live API's own TLS failure does, the line says to check the clock."""
    assert "timedatectl" in describe_failure(failure), describe_failure(failure)
