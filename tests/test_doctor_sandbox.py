"""The doctor judges the service's files as the service sees them: its unit hides home
directories (ProtectHome=yes) and gives it a /tmp of its own (PrivateTmp=yes), so a file
the owner can read there is one the service cannot; it runs as its own user, who may not
read a file only root may; and it takes the installer's key first."""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device import config
from device.doctor import settings
from device.doctor.progress import Progress
from device.doctor.result import Context, Options, Status
from device.doctor.settings import check_config, check_key


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


def readable_at(place: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A persona the owner can read at `place` (the doctor runs outside the service's
    sandbox), wherever that is on this machine."""
    persona = tmp_path / "persona.txt"
    persona.write_text("You are a teapot.\n")
    real_read = config.read_text
    monkeypatch.setattr(
        config,
        "read_text",
        lambda path, *a, **kw: real_read(persona if str(path) == place else path, *a, **kw),
    )


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
    readable_at(place, tmp_path, monkeypatch)
    service_config.write_text(f'[live]\n{setting} = "{place}"\n')
    result, cfg = check_config(None)
    assert cfg is not None
    assert result.status is Status.WARN, result
    assert place in result.measured and "service" in result.measured
    assert result.fix is not None and "/etc/live-appliance" in result.fix


def test_files_the_service_can_see_pass(
    service_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    place = "/etc/live-appliance/persona.txt"
    readable_at(place, tmp_path, monkeypatch)
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


@pytest.fixture
def service_user(monkeypatch: pytest.MonkeyPatch) -> None:
    """The installer's `live-appliance` user and group (990), in audio, video, gpio, spi."""
    gids = {"live-appliance": 990, "audio": 29, "video": 44, "gpio": 997, "spi": 999}
    real_user, real_group = pwd.getpwnam, grp.getgrnam

    def getpwnam(name: str) -> Any:
        if name == "live-appliance":
            return pwd.struct_passwd((name, "x", 990, 990, "", "/nonexistent", "/sbin/nologin"))
        return real_user(name)

    def getgrnam(name: str) -> Any:
        return grp.struct_group((name, "x", gids[name], [])) if name in gids else real_group(name)

    monkeypatch.setattr(pwd, "getpwnam", getpwnam)
    monkeypatch.setattr(grp, "getgrnam", getgrnam)


@pytest.fixture
def etc_dir() -> Iterator[Path]:
    """A directory every user may search, as /etc/live-appliance is (tmp_path is not)."""
    place = Path(tempfile.mkdtemp(prefix="live-appliance-etc-", dir="/tmp"))
    place.chmod(0o755)
    yield place
    shutil.rmtree(place)


@pytest.mark.skipif(os.geteuid() != 0, reason="a file of root's needs root")
@pytest.mark.parametrize("setting", ["system_instruction_file", "api_key_file", "itself"])
@pytest.mark.parametrize(("owner", "group", "mode", "status"), [
    (0, 0, 0o600, Status.WARN), (0, 0, 0o640, Status.WARN), (990, 0, 0o600, Status.PASS),
    (0, 990, 0o640, Status.PASS), (0, 0, 0o644, Status.PASS),
])  # fmt: skip
def test_a_file_only_root_may_read_is_a_warning(
    service_config: Path,
    service_user: None,
    etc_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    setting: str,
    owner: int,
    group: int,
    mode: int,
    status: Status,
) -> None:
    """`sudo live-appliance doctor` reads a persona or token file made 0600 by root (a token
    job with umask 077), or config.toml itself; the service, its own user, may not, and
    exits 2 at every start. Nothing is said of a file the service owns or may read."""
    settings_file = etc_dir / "config.toml"  # beside it: the service may read it there
    monkeypatch.setattr(config, "DEFAULT_PATH", settings_file)
    if setting == "itself":
        named = settings_file
        settings_file.write_text("[audio]\nvolume = 0.5\n")
    else:
        named = etc_dir / "file.txt"
        secret = "AIza-0123456789abcdefgh\n" if setting == "api_key_file" else "A teapot.\n"
        named.write_text(secret)
        settings_file.write_text(f'[live]\n{setting} = "{named}"\n')
    os.chown(named, owner, group)
    named.chmod(mode)
    monkeypatch.setattr(settings, "HIDDEN_FROM_SERVICE", ())  # /tmp: about the mode only
    result, cfg = check_config(None)
    assert cfg is not None
    assert result.status is status, result
    if status is Status.WARN:
        assert str(named) in result.measured and "live-appliance" in result.measured
        assert result.fix is not None and f"chmod 0640 {named}" in result.fix


def test_a_key_file_the_installers_key_shadows_is_a_warning(
    service_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service reads its credential (the installer's file) before [live] api_key_file;
    `sudo live-appliance doctor`, outside systemd, reads api_key_file first: it tested a
    token the box never uses, and said PASS."""
    installed = tmp_path / "api-key"
    installed.write_text("AIza-old-installers-key-0123\n")
    monkeypatch.setattr(config, "INSTALLED_KEY_FILE", installed)
    token = tmp_path / "token"
    token.write_text("auth_tokens/new-minted-token-0123\n")
    service_config.write_text(f'[live]\napi_key_file = "{token}"\n')
    result = asyncio.run(check_key(Context(config.load(), Options(), Progress(spinner=False))))
    assert result.status is Status.WARN, result
    assert str(installed) in result.measured and "AIza" not in result.measured
    installed.write_text("")  # as the README says: empty it, and the token is the key
    result = asyncio.run(check_key(Context(config.load(), Options(), Progress(spinner=False))))
    assert result.status is Status.PASS, result


@pytest.mark.skipif(os.geteuid() != 0, reason="a file of root's needs root")
def test_a_file_in_a_hidden_place_is_told_to_move_not_to_chmod(
    service_config: Path, service_user: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A persona in the owner's home (0700 on Raspberry Pi OS), 0600: ProtectHome hides it
    from the service whatever its mode; the advice must be to move it, as before the
    permission check, not a chgrp/chmod that changes nothing."""
    home = Path(tempfile.mkdtemp(prefix="home-", dir="/tmp"))
    try:
        home.chmod(0o700)
        named = home / "persona.txt"
        named.write_text("A teapot.\n")
        named.chmod(0o600)
        monkeypatch.setattr(settings, "HIDDEN_FROM_SERVICE", (str(home),))
        service_config.write_text(f'[live]\nsystem_instruction_file = "{named}"\n')
        result, _ = check_config(None)
        assert result.status is Status.WARN, result
        assert result.fix is not None and "Move the file" in result.fix, result.fix
    finally:
        shutil.rmtree(home)
