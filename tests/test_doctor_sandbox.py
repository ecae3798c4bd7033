"""The doctor judges the service's files as the service sees them: its unit hides home
directories (ProtectHome=yes) and gives it a /tmp of its own (PrivateTmp=yes), so a file
the owner can read there is one the service cannot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from device import config
from device.doctor.result import Status
from device.doctor.settings import check_config


@pytest.fixture
def service_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file read as the service's own (the default path), no overrides around it."""
    for name in list(os.environ):
        if name.startswith(config.ENV_PREFIX) or name in config.KEY_ENV_VARS:
            monkeypatch.delenv(name)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = tmp_path / "config.toml"
    monkeypatch.setattr(config, "DEFAULT_PATH", path)
    return path


@pytest.mark.parametrize(
    ("setting", "place"),
    [
        ("system_instruction_file", "/home/pi/persona.txt"),
        ("api_key_file", "/home/pi/token"),
        ("api_key_file", "~/token"),
        ("api_key_file", "/tmp/token"),
        ("system_instruction_file", "/root/persona.txt"),
    ],
)
def test_a_file_the_service_cannot_see_is_a_warning(
    service_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str, place: str
) -> None:
    persona = tmp_path / "persona.txt"
    persona.write_text("You are a teapot.\n")
    real_read = config.read_text
    # The owner can read it (the doctor runs outside the service's sandbox).
    monkeypatch.setattr(
        config, "read_text", lambda path, *a: real_read(persona if str(path) == place else path, *a)
    )
    service_config.write_text(f'[live]\n{setting} = "{place}"\n')
    result, cfg = check_config(None)
    assert cfg is not None
    assert result.status is Status.WARN, result
    assert place in result.measured and "service" in result.measured
    assert result.fix is not None and "/etc/live-appliance" in result.fix


def test_files_the_service_can_see_pass(
    service_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    persona = tmp_path / "persona.txt"
    persona.write_text("You are a teapot.\n")
    place = "/etc/live-appliance/persona.txt"
    real_read = config.read_text
    monkeypatch.setattr(
        config, "read_text", lambda path, *a: real_read(persona if str(path) == place else path, *a)
    )
    service_config.write_text(f'[live]\nsystem_instruction_file = "{place}"\n')
    result, _ = check_config(None)
    assert result.status is Status.PASS, result


def test_a_config_named_on_the_command_line_is_not_the_services(tmp_path: Path) -> None:
    """A test rig's or a checkout's configuration may keep its files anywhere."""
    persona = Path("/tmp") / f"persona-{tmp_path.name}.txt"
    persona.write_text("You are a teapot.\n")
    try:
        named = tmp_path / "rig.toml"
        named.write_text(f'[live]\nsystem_instruction_file = "{persona}"\n')
        result, _ = check_config(named)
        assert result.status is Status.PASS, result
    finally:
        persona.unlink()
