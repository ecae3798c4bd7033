"""The doctor's key check on a Pi whose clock NTP has not set yet (after a power cut, a
network that blocks NTP): the times it compares are not to be trusted, and it says nothing
it cannot tell."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from test_credentials_over_time import mint

from device import config
from device.config import Config, LiveConfig, with_api_key
from device.doctor import service
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status
from device.doctor.settings import check_key


def service_started_an_hour_ago(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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


async def test_a_token_file_is_not_judged_old_by_a_clock_nobody_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token job's file, written by a clock NTP had set, read by one it has not: its
    age by this clock says nothing about the job, which the doctor said had stopped."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setattr(config, "INSTALLED_KEY_FILE", tmp_path / "no-installed-key")
    key_file = tmp_path / "token"
    mint(key_file, "auth_tokens/written-by-another-clock")
    two_days_ago = key_file.stat().st_mtime - 2 * 86400
    os.utime(key_file, (two_days_ago, two_days_ago))
    monkeypatch.setattr(service, "clock_synchronized", lambda: False)
    cfg = with_api_key(Config(live=LiveConfig(api_key_file=str(key_file))))
    result = await check_key(Context(cfg, Options(), Progress(spinner=False)))
    assert result.status is Status.PASS, result


def test_the_kernel_is_asked_whether_the_clock_is_set() -> None:
    """adjtimex's own answer (read only, no privilege), as timedatectl's NTPSynchronized."""
    import ctypes

    state = ctypes.CDLL(None, use_errno=True).adjtimex(ctypes.create_string_buffer(512))
    assert service.clock_synchronized() is (state not in (-1, 5))
