"""The doctor as an owner runs it over SSH, in a shell that is not the service's: a key
exported there, a login not yet in the service's group, a CA file pasted from the rig,
a configuration file that is not there. Each line must say what the service sees and
what to do, not pass what the service cannot use or send the owner after a setting."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from helpers import open_refused

from device import config
from device.config import Config, LiveConfig
from device.control_client import Barred
from device.doctor import daemon
from device.doctor.network import check_network
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status
from device.doctor.settings import check_config, check_key
from device.errors import ConfigFileUnusable
from rig.daemon import to_toml
from rig.server.server import ServerThread

KEY = "AIzaExportedInTheOwnersShell0123456789ab"


@pytest.fixture
def services_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The service's configuration (as /etc/live-appliance/config.toml is), no key in the
    installer's file or the service's credential: the owner's shell exports one."""
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "config.toml"
    path.write_text(to_toml({"live": {}}))
    monkeypatch.setattr(config, "DEFAULT_PATH", path)
    monkeypatch.setattr(config, "INSTALLED_KEY_FILE", tmp_path / "api-key")
    return path


def key_line(path: Path) -> tuple[Status, str, str]:
    result, cfg = check_config(path)
    assert cfg is not None, result
    answer = asyncio.run(check_key(Context(cfg, Options(), Progress(spinner=False))))
    return answer.status, answer.measured, answer.fix or ""


def test_a_missing_key_for_the_service_is_not_said_to_be_exported(services_own: Path) -> None:
    """The advice said "or export GEMINI_API_KEY": done, the doctor passed and the
    service, which never sees the owner's shell, still had no key."""
    status, _, fix = key_line(services_own)
    assert status is Status.FAIL
    assert str(config.INSTALLED_KEY_FILE) in fix
    assert "export" not in fix, fix


def test_a_missing_key_for_a_copy_run_by_hand_may_be_exported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, services_own: Path
) -> None:
    other = tmp_path / "mine.toml"
    other.write_text(to_toml({"live": {}}))
    status, _, fix = key_line(other)
    assert status is Status.FAIL and "export GEMINI_API_KEY" in fix, fix


@pytest.mark.parametrize("variable", ["GEMINI_API_KEY", "GOOGLE_API_KEY"])
def test_a_key_in_the_owners_shell_alone_is_no_pass_for_the_service(
    services_own: Path, monkeypatch: pytest.MonkeyPatch, systemctl: Any, variable: str
) -> None:
    monkeypatch.setenv(variable, KEY)
    systemctl(Environment="LANG=C.UTF-8")
    status, measured, fix = key_line(services_own)
    assert status is Status.WARN, measured
    assert "does not see this shell's environment" in measured
    assert str(config.INSTALLED_KEY_FILE) in fix and f"unset {variable}" in fix
    assert KEY not in measured + fix


def test_a_key_the_services_unit_sets_in_its_environment_too_passes(
    services_own: Path, monkeypatch: pytest.MonkeyPatch, systemctl: Any
) -> None:
    """A drop-in's Environment=GEMINI_API_KEY=...: the service sees it as the shell does."""
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    systemctl(Environment=f"LANG=C.UTF-8 GEMINI_API_KEY={KEY}")
    status, measured, _ = key_line(services_own)
    assert status is Status.PASS, measured


def test_a_missing_configuration_file_is_not_called_a_setting_to_correct(
    tmp_path: Path,
) -> None:
    for path in (tmp_path / "nowhere.toml", tmp_path):  # not there; a directory
        result, cfg = check_config(path)
        assert cfg is None and result.status is Status.FAIL
        assert result.fix == ConfigFileUnusable.FIX, result
        assert "Correct that setting" not in (result.fix or "")
    bad = tmp_path / "bad.toml"
    bad.write_text("[live\n")
    result, _ = check_config(bad)
    assert result.fix == ConfigFileUnusable.FIX and "not valid TOML" in result.measured
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[live]\nnot_a_setting = 1\n")
    result, _ = check_config(unknown)
    assert result.fix is not None and "Correct that setting" in result.fix, result


async def test_a_ca_file_that_is_not_there_is_named_not_blamed_on_the_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rig's pasted SSL_CERT_FILE outliving its server: "TLS: network: No such file
    or directory", a captive portal's fix first."""
    missing = tmp_path / "rig-ca.pem"
    monkeypatch.setenv("SSL_CERT_FILE", str(missing))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    cfg = Config(live=LiveConfig(), api_key=config.Secret(KEY))
    result = await check_network(Context(cfg, Options(), Progress()))
    assert result.status is Status.FAIL
    assert f"SSL_CERT_FILE={missing}" in result.measured, result.measured
    assert "No such file" in result.measured
    assert result.fix is not None and result.fix.startswith("Unset SSL_CERT_FILE"), result.fix
    assert "portal" not in result.fix


async def test_without_sudo_the_network_line_does_not_ask_for_a_key_the_box_has(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, services_own: Path
) -> None:
    """The box's key is root's alone: the key line says to use sudo, and the network line
    said "Give the daemon an API key". It runs the connection, then says the same."""
    installed = config.INSTALLED_KEY_FILE
    installed.write_text(KEY + "\n")
    open_refused(monkeypatch, lambda path: path == installed)
    _, cfg = check_config(services_own)
    assert cfg is not None and cfg.api_key is None
    with ServerThread(pace=0) as server:
        monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)
        cfg = Config(live=LiveConfig(base_url=server.base_url))
        answer = await check_network(Context(cfg, Options(), Progress()))
    assert answer.status is Status.WARN, answer
    assert "this user may not read the box's key" in answer.measured
    assert answer.fix is not None and "sudo live-appliance doctor network" in answer.fix
    assert "Give the daemon an API key" not in answer.fix


@pytest.mark.parametrize(
    ("active", "held"),
    [("inactive", False), ("failed", False), ("active", True), ("activating", True)],
)
async def test_a_socket_this_user_may_not_use_holds_the_hardware_only_if_the_service_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, systemctl: Any, active: str, held: bool
) -> None:
    """Not yet in the service's group (that takes a new login), the owner stopped the
    service to test the microphone: the doctor took the refused socket for a daemon,
    skipped every device "in use" and exited 0, having tested nothing."""

    def barred(*_args: Any, **_kwargs: Any) -> dict[str, Any]:
        raise Barred("permission denied on /run/live-appliance/control.sock")

    monkeypatch.setattr(daemon, "request", barred)
    systemctl(ActiveState=active)
    ctx = Context(Config(), Options(), Progress(spinner=False))
    status = await ctx.daemon
    assert (status is not None) == held, status
    if held:
        assert status is not None and status.get("unreadable")
