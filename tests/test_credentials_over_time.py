"""A box left alone for months, as it authenticates: ephemeral tokens that expire while
a conversation is open, through the real SDK against the local server."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest
from helpers import until
from wire import config_for

from device import config
from device.config import Config, LiveConfig, with_api_key
from device.doctor import service
from device.doctor.network import check_network
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Result, Status
from device.doctor.settings import check_key
from device.live.session import LiveLink
from device.live.wire import CLOSE_POLICY
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

#: How the service may close a conversation whose token's `expire_time` has passed.
TOKEN_EXPIRED = "Unauthenticated: the auth token has expired."


def token_config(server: LiveServer, key_file: Path, token: str) -> Config:
    """The box with its token in `key_file`, read as at the daemon's start."""
    mint(key_file, token)
    cfg = config_for(server, live={"api_key_file": str(key_file)})
    return with_api_key(cfg)


def mint(key_file: Path, token: str) -> None:
    """The job that mints tokens writes the next one where the box reads its key."""
    key_file.write_text(f"{token}\n")


def tokens_sent(server: LiveServer) -> list[str]:
    return [c.headers["authorization"] for c in server.log.connections()]


async def what_a_press_meets(cfg: Config) -> Event:
    """The one event a link reports for a session opened with `cfg` (a failure, here)."""
    events: list[Event] = []
    link = LiveLink(cfg, Outbox(hold_s=8), events.append, lambda _item, _t: None)
    link.open(1)
    try:
        await until(lambda: events, within=10)
    finally:
        await link.close()
    (event,) = events
    return event


async def closed_for_its_token(
    server: LiveServer, key_file: Path, next_token: str | None
) -> list[Event]:
    """A conversation with one turn; the minter writes `next_token` (None: none) and the
    service closes the open connection for the expired token: what the link reported."""
    server.config.ephemeral_tokens = {"auth_tokens/first"}
    events: list[Event] = []
    outbox = Outbox(hold_s=8)
    link = LiveLink(
        token_config(server, key_file, "auth_tokens/first"),
        outbox,
        events.append,
        lambda _item, _t: None,
    )
    link.open(1)
    try:
        await until(lambda: any(isinstance(e, SetupComplete) for e in events), within=10)
        outbox.put("text", "remember the number seven")
        await until(lambda: link._handle is not None, within=10)
        if next_token is not None:
            mint(key_file, next_token)
            server.config.ephemeral_tokens = {next_token}  # the first expired
        else:
            server.config.ephemeral_tokens = set()
        events.clear()
        await server.close_all(CLOSE_POLICY, TOKEN_EXPIRED)
        ends = Reconnected | ConnectionLost
        await until(lambda: any(isinstance(e, ends) for e in events), within=10)
    finally:
        await link.close()
    return events


async def test_a_conversation_closed_for_its_expired_token_resumes_with_the_next(
    server: LiveServer, tmp_path: Path
) -> None:
    """The service closes a conversation once its token's `expire_time` has passed
    ("Gemini may preemptively close the session after this time"): the conversation ended
    in the error state though the minter had written the next token long before; the
    resume refused for the same expired token is taken up with the next already."""
    events = await closed_for_its_token(server, tmp_path / "token", "auth_tokens/second")
    assert Reconnected(session=1, history_lost=False) in events, events
    said = [e.reason for e in events if isinstance(e, Reconnecting)]
    assert said and not any("none newer" in reason for reason in said), said
    assert tokens_sent(server) == ["Token auth_tokens/first", "Token auth_tokens/second"]


async def test_a_conversation_closed_for_its_expired_token_with_none_newer_ends_at_once(
    server: LiveServer, tmp_path: Path
) -> None:
    """No newer token in the file: one line, the error state, no connection tried with
    the token the service has just refused."""
    events = await closed_for_its_token(server, tmp_path / "token", None)
    lost = [e for e in events if isinstance(e, ConnectionLost)]
    assert len(lost) == 1 and TOKEN_EXPIRED in lost[0].reason, events
    assert tokens_sent(server) == ["Token auth_tokens/first"]


async def test_a_press_with_a_spent_token_says_so_and_where_it_came_from(
    server: LiveServer, tmp_path: Path
) -> None:
    """The minter stopped (its host down, its own key revoked): each press is refused with
    the token left in the file. The journal and `ctl status` said "the service refused
    the API key", and the owner went to make a new key at AI Studio, when the token file
    and the job that writes it were what to look at."""
    server.config.ephemeral_tokens = set()  # the token in the file is spent or expired
    key_file = tmp_path / "token"
    failed = await what_a_press_meets(token_config(server, key_file, "auth_tokens/spent"))
    assert isinstance(failed, ConnectFailed), failed
    assert "ephemeral token" in failed.reason and str(key_file) in failed.reason, failed.reason
    assert "spent or expired" in failed.reason, failed.reason


async def test_the_doctor_with_a_spent_token_points_at_the_token_file_not_a_new_key(
    server: LiveServer, tmp_path: Path
) -> None:
    """`doctor`'s fix for a refused token was to make a new API key at AI Studio."""
    server.config.ephemeral_tokens = set()
    key_file = tmp_path / "token"
    ctx = Context(token_config(server, key_file, "auth_tokens/spent"), Options(),
                  Progress(spinner=False))
    result = await check_network(ctx)
    assert result.status is Status.FAIL
    assert result.fix is not None and "aistudio" not in result.fix, result.fix
    assert "token" in result.fix and str(key_file) in result.fix, result.fix


def rotated_without_a_restart(
    server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Config:
    """The service started with the old key (its systemd credential, a copy of the
    installer's key file); the owner then wrote a new one into that file
    (`sudoedit /etc/live-appliance/api-key`) and revoked the old one, without a restart."""
    credentials, installed = tmp_path / "credentials", tmp_path / "api-key"
    credentials.mkdir()
    (credentials / config.CREDENTIAL_NAME).write_text("AIza-the-old-revoked-key\n")
    installed.write_text(f"{server.api_key}\n")
    started = (credentials / config.CREDENTIAL_NAME).stat().st_mtime
    os.utime(installed, (started + 60, started + 60))  # a minute after the start
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    monkeypatch.setattr(config, "INSTALLED_KEY_FILE", installed)
    return with_api_key(config_for(server))


async def test_a_key_refused_after_the_key_file_changed_says_to_restart_the_service(
    server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd copies the key file once, at the start: the owner who rotated the key and
    revoked the old one saw each press refused, "the service refused the API key", while
    `sudo live-appliance doctor` passed with the new key; nothing said that the service
    still used the old one until it restarts."""
    cfg = rotated_without_a_restart(server, tmp_path, monkeypatch)
    failed = await what_a_press_meets(cfg)
    assert isinstance(failed, ConnectFailed), failed
    assert str(config.INSTALLED_KEY_FILE) in failed.reason, failed.reason
    assert "systemctl restart live-appliance" in failed.reason, failed.reason


async def test_the_doctor_without_sudo_says_who_may_read_the_vertex_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's service account key file is root's and the service's group's (0640):
    `live-appliance doctor` run without sudo said "the check itself failed:
    PermissionError ..." and "Report this", for a file it only may not read."""
    import google.auth

    from device.doctor.settings import check_key

    key_file = tmp_path / "vertex.json"

    def barred(**_: object) -> object:
        raise PermissionError(13, "Permission denied", str(key_file))

    monkeypatch.setattr(google.auth, "default", barred)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cfg = Config(live=LiveConfig(backend="vertex", project="p", location="l"))
    result = await check_key(Context(cfg, Options(), Progress(spinner=False)))
    assert result.status is Status.FAIL, result
    assert str(key_file) in result.measured, result.measured
    assert result.fix is not None and "sudo" in result.fix, result.fix


async def test_a_vertex_key_file_the_box_cannot_read_is_not_said_to_be_the_network(
    server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service account key file replaced by one only root may read: the network check
    (and the journal, at a press that loads the credentials anew) said "network:
    Permission denied", and the fix was to try again in a minute."""
    import google.auth

    key_file = tmp_path / "vertex.json"

    def barred(**_: object) -> object:
        raise PermissionError(13, "Permission denied", str(key_file))

    monkeypatch.setattr(google.auth, "default", barred)
    cfg = config_for(server, live={"backend": "vertex", "project": "p", "location": "l"})
    ctx = Context(dataclasses.replace(cfg, api_key=None), Options(), Progress(spinner=False))
    result = await check_network(ctx)
    assert result.status is Status.FAIL, result
    assert "network" not in result.measured and str(key_file) in result.measured, result
    assert result.fix is not None and "Try again" not in result.fix, result.fix
    assert "ls -l" in result.fix, result.fix


async def test_a_press_while_the_minter_rewrites_the_token_file_connects(
    server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A minter that writes its file in place (`echo $TOKEN > file`) leaves it empty for
    a moment: a press then kept the spent token it had, was refused, and showed the error
    with the next token already in the file a millisecond later."""
    from device.live import session as session_mod

    server.config.token_uses = 1
    server.config.ephemeral_tokens = {"auth_tokens/first", "auth_tokens/second"}
    key_file = tmp_path / "token"
    cfg = token_config(server, key_file, "auth_tokens/first")
    events: list[Event] = []
    link = LiveLink(cfg, Outbox(hold_s=8), events.append, lambda _item, _t: None)
    try:
        link.open(1)  # the first token's one session
        await until(lambda: events, within=10)
        await link.close()
        key_file.write_text("")  # the minter truncated the file ...
        read = session_mod.find_api_key

        def read_mid_write(live: LiveConfig) -> object:
            found = read(live)
            mint(key_file, "auth_tokens/second")  # ... and wrote the next one just after
            return found

        monkeypatch.setattr(session_mod, "find_api_key", read_mid_write)
        link.open(2)
        await until(lambda: len(events) == 2, within=10)
    finally:
        await link.close()
    assert [type(e).__name__ for e in events] == ["SetupComplete", "SetupComplete"], events
    assert tokens_sent(server)[-1] == "Token auth_tokens/second"


async def test_the_doctor_finds_vertex_credentials_where_the_service_is_told_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README names the service account key file in a drop-in
    (Environment=GOOGLE_APPLICATION_CREDENTIALS=...): the service used it, and
    `sudo live-appliance doctor`, without that variable, failed the key check with "no
    application default credentials" and the fix to set what was set."""
    from device.doctor.runner import run_checks

    key_file = tmp_path / "vertex.json"  # a user's credentials: loaded without a network
    key_file.write_text(
        '{"type": "authorized_user", "client_id": "c", "client_secret": "s", '
        '"refresh_token": "r"}'
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    systemctl = bin_dir / "systemctl"  # answers `show` as systemd does for the service
    systemctl.write_text(
        "#!/bin/sh\necho 'Environment=LANG=C.UTF-8 "
        f"GOOGLE_APPLICATION_CREDENTIALS={key_file}'\n"
    )
    systemctl.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("HOME", str(tmp_path))  # no gcloud login of the doctor's user
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")  # no metadata server either
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "")  # restored after the test
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    config_file = tmp_path / "config.toml"
    config_file.write_text('[live]\nbackend = "vertex"\nproject = "p"\nlocation = "l"\n')
    (result,) = await run_checks(
        ["key"], Options(), str(config_file), Progress(spinner=False), lambda _r: None
    )
    assert result.status is Status.PASS, result


async def a_token_file_two_days_old_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Result:
    """The doctor's key check of a box whose only key is a token file last written two
    days ago: it warns, and sends the owner to the job that mints the tokens."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setattr(config, "INSTALLED_KEY_FILE", tmp_path / "no-installed-key")
    key_file = tmp_path / "token"
    mint(key_file, "auth_tokens/written-two-days-ago")
    two_days_ago = key_file.stat().st_mtime - 2 * 86400
    os.utime(key_file, (two_days_ago, two_days_ago))
    cfg = with_api_key(Config(live=LiveConfig(api_key_file=str(key_file))))
    result = await check_key(Context(cfg, Options(), Progress(spinner=False)))
    assert result.status is Status.WARN, result
    assert result.fix is not None and "job" in result.fix, result.fix
    return result


async def test_the_doctor_says_a_token_file_older_than_any_token_lives_is_not_renewed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token lives 20 hours at most: a token file last written two days ago means the
    job that mints them has stopped (its host down, its own key revoked). The key check
    passed ("ephemeral token from api_key_file ..."), and each press was refused."""
    monkeypatch.setattr(service, "clock_synchronized", lambda: True)  # NTP has set it
    result = await a_token_file_two_days_old_checked(tmp_path, monkeypatch)
    assert "48 h" in result.measured or "2 days" in result.measured, result.measured


async def test_the_doctor_says_the_service_still_holds_the_key_it_started_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner rotated the key with sudoedit and forgot the restart: `sudo live-appliance
    doctor` read the new key from the file and passed, while the service held the copy
    systemd made at its start an hour before, and each press was refused."""

    from device.doctor import service
    from device.doctor.settings import check_key

    monkeypatch.setattr(service, "clock_synchronized", lambda: True)  # NTP has set it
    installed = tmp_path / "api-key"
    installed.write_text("AIza-the-new-key-written-just-now\n")
    service_started_an_hour_ago(tmp_path, monkeypatch)
    for name in ("CREDENTIALS_DIRECTORY", *config.KEY_ENV_VARS):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(config, "INSTALLED_KEY_FILE", installed)
    cfg = with_api_key(Config())
    result = await check_key(Context(cfg, Options(), Progress(spinner=False)))
    assert result.status is Status.WARN, result
    assert result.fix is not None and "systemctl restart live-appliance" in result.fix, result


def service_started_an_hour_ago(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`systemctl show` saying the service started an hour ago (its monotonic timestamp)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    started_us = round((time.monotonic() - 3600) * 1e6)
    systemctl = bin_dir / "systemctl"
    systemctl.write_text(
        "#!/bin/sh\nprintf 'ActiveState=active\\n"
        f"ExecMainStartTimestampMonotonic={started_us}\\n'\n"
    )
    systemctl.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


async def test_a_key_written_before_a_power_cut_is_not_said_newer_than_the_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unplugged for a week, the Pi came back at the time fake-hwclock saved at its last
    shutdown, and NTP has not set it since (a network that blocks it): the key, written
    before the power cut by the true clock, looks written after the service started by
    this one. The doctor said to restart the service; after the restart it said so again."""
    installed = tmp_path / "api-key"
    installed.write_text("AIza-the-key-written-before-the-power-cut\n")
    written = time.time() - 1800  # by this clock, half an hour after the service started
    os.utime(installed, (written, written))
    service_started_an_hour_ago(tmp_path, monkeypatch)
    for name in ("CREDENTIALS_DIRECTORY", *config.KEY_ENV_VARS):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(config, "INSTALLED_KEY_FILE", installed)
    monkeypatch.setattr(service, "clock_synchronized", lambda: False)
    result = await check_key(Context(with_api_key(Config()), Options(), Progress(spinner=False)))
    assert result.status is Status.PASS, result
    assert "restart" not in (result.fix or ""), result


async def test_a_token_file_old_by_a_clock_nobody_set_is_older_still(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Pi's clock NTP has not set is behind (fake-hwclock's last save, or 1970), never
    ahead: a token file two days old by it is older still, its job stopped all the same.
    On a network that blocks NTP the doctor had stopped saying so for good."""
    monkeypatch.setattr(service, "clock_synchronized", lambda: False)
    await a_token_file_two_days_old_checked(tmp_path, monkeypatch)


def test_the_kernel_is_asked_whether_the_clock_is_set() -> None:
    """adjtimex's own answer (read only, no privilege), as timedatectl's NTPSynchronized."""
    import ctypes

    state = ctypes.CDLL(None, use_errno=True).adjtimex(ctypes.create_string_buffer(512))
    assert service.clock_synchronized() is (state not in (-1, 5))
