"""Review of the day's change: the places where commits written apart meet."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import google.auth
import google.auth.credentials
import pytest
from google.auth import exceptions as auth_errors
from helpers import until
from wire import config_for

from device import appliance as appliance_module
from device import workers
from device.control import AlreadyRunning, single_instance
from device.live.session import LiveLink
from device.outbox import Outbox
from device.states import ConnectFailed, SetupComplete
from rig.server.server import LiveServer


def test_the_daemon_lock_is_held_while_a_stuck_call_keeps_the_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon whose camera or sound card is stuck in a driver call still has the device
    while exit_past_stuck ends it: a `live-appliance run` started meanwhile must be told
    one is still stopping, not start and find its devices taken."""
    socket = tmp_path / "control.sock"
    second_refused: list[bool] = []

    class Appliance:
        failed = False

        def __init__(self, cfg: Any) -> None:
            pass

        async def run(self) -> None:
            pass

    def exit_past_stuck(status: int) -> int:
        try:
            with single_instance(socket):
                second_refused.append(False)
        except AlreadyRunning:
            second_refused.append(True)
        return status

    monkeypatch.setattr(appliance_module, "Appliance", Appliance)
    monkeypatch.setattr(appliance_module.logs, "setup", lambda **_: None)
    monkeypatch.setattr(workers, "exit_past_stuck", exit_past_stuck)
    cfg: Any = SimpleNamespace(api_key=None, control=SimpleNamespace(socket=str(socket)))
    assert appliance_module.run_daemon(cfg) == 0
    assert second_refused == [True]


# ---- Vertex AI credentials revoked, press after press ------------------------------------


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
    async with LiveServer(pace=0, reply_seconds=0.2) as server:
        monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)
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
    async with LiveServer(pace=0, reply_seconds=0.2, bearer_tokens={"renewed"}) as server:
        monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)
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
