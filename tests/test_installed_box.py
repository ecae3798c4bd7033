"""What an owner types over SSH on an installed box, with the installer's real paths.

`/etc/live-appliance` is laid out as scripts/install-pi.sh leaves it (the directory
root:live-appliance 0750, config.toml 0640, api-key root only 0600), in a private
mount namespace over this machine's own /etc (`SystemView`): the commands run
unchanged, as root or as an owner in the service's group, with no credential
directory and no key in the environment, as after `sudo` on a Pi. And the daemon on
a pin factory whose LEDs cannot fade, as some are on a Pi.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import lines_of
from speech import reply_heard, speaker_during_turn
from system_view import SystemView, require

from rig.daemon import start_daemon, to_toml
from rig.loopback import PulseLoopback
from rig.server.server import ServerThread

APP_GID = 990  # the service's group, as the installer makes it
OWNER = 1500  # the person who ran the installer: in that group, not root


@pytest.fixture
def server() -> Iterator[ServerThread]:
    with ServerThread(pace=0, reply_seconds=0.3) as thread:
        yield thread


@pytest.fixture
def box(tmp_path: Path) -> SystemView:
    if os.geteuid() != 0:
        pytest.skip("the installed layout needs root (a mount namespace and root-owned files)")
    return SystemView(tmp_path / "view")


def install(box: SystemView, server: ServerThread, key: str) -> None:
    """/etc/live-appliance as the installer leaves it, pointed at the local server."""
    etc = box.layers["/etc"][0] / "live-appliance"
    etc.mkdir()
    os.chown(etc, 0, APP_GID)
    etc.chmod(0o750)
    config = etc / "config.toml"
    config.write_text(to_toml({"live": {"base_url": server.base_url, "transcripts": False}}))
    os.chown(config, 0, APP_GID)
    config.chmod(0o640)
    api_key = etc / "api-key"
    api_key.write_text(key + "\n")
    api_key.chmod(0o600)


def owner_env(server: ServerThread) -> dict[str, str]:
    """What `sudo` leaves: no key, no credential directory; the local server's CA."""
    return {"PATH": os.environ["PATH"], "HOME": "/root", "SSL_CERT_FILE": server.ca_file}


def run(box: SystemView, server: ServerThread, *args: str, user: int | None = None) -> Any:
    command = [sys.executable, "-m", "device", *args]
    if user is not None:
        _require_a_checkout_others_can_enter()
        setpriv = require("setpriv", "util-linux")
        command = [setpriv, f"--reuid={user}", f"--regid={user}", f"--groups={APP_GID}", *command]
    env = owner_env(server) | ({"HOME": "/tmp"} if user is not None else {})
    return box.run(command, env=env)


def test_as_root_doctor_and_ask_use_the_installers_key_for_a_real_setup(
    box: SystemView, server: ServerThread
) -> None:
    install(box, server, server.api_key)
    result = run(box, server, "doctor", "key", "network", "--turn")
    lines = lines_of(result)
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines["key"].startswith("PASS")
    assert "/etc/live-appliance/api-key" in lines["key"], "the key check says where from"
    assert lines["network"].startswith("PASS") and "Live setup" in lines["network"]
    assert [c.auth for c in server.log.connections()] == ["api_key"]
    asked = run(box, server, "ask", "Hello")
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.strip() == 'Reply 1: you said "Hello".'
    assert server.api_key not in result.stdout + result.stderr + asked.stdout + asked.stderr


def test_a_refused_key_in_the_installers_file_is_diagnosed_at_setup(
    box: SystemView, server: ServerThread
) -> None:
    install(box, server, "AIza-revoked-key-0123456789")
    result = run(box, server, "doctor", "key", "network")
    lines = lines_of(result)
    assert result.returncode == 1
    assert lines["key"].startswith("PASS")
    assert lines["network"].startswith("FAIL") and "1008" in lines["network"]
    assert "Check the API key" in lines["network"]
    assert "AIza-revoked" not in result.stdout + result.stderr


def test_an_owner_who_may_not_read_the_key_is_told_to_use_sudo(
    box: SystemView, server: ServerThread
) -> None:
    install(box, server, server.api_key)
    doctor = run(box, server, "doctor", "key", user=OWNER)
    lines = lines_of(doctor)
    assert doctor.returncode == 1
    assert lines["key"].startswith("FAIL") and "sudo" in lines["key"].split("fix:")[1]
    asked = run(box, server, "ask", "Hello", user=OWNER)
    assert asked.returncode == 2
    assert "sudo" in asked.stderr and "/etc/live-appliance/api-key" in asked.stderr
    for output in (doctor.stdout + doctor.stderr, asked.stderr):
        assert "Traceback" not in output
    assert server.log.connections() == []


def test_leds_without_pwm_blink_on_and_off_and_the_box_answers(
    loopback: PulseLoopback, workdir: Path
) -> None:
    """gpiozero's plain mock pins have no PWM, like some pin factories on a Pi."""
    server = ServerThread(reply_seconds=0.5)
    server.start()
    try:
        assert server.server is not None
        daemon = start_daemon(
            workdir, loopback, server.server, env={"GPIOZERO_MOCK_PIN_CLASS": "mockpin"}
        )
        daemon.wait_ready()
        reply_heard(speaker_during_turn(loopback, daemon), turn=1, seconds=0.5)
        status = daemon.status()
        assert status["leds"] == ["idle", "connecting", "listening", "thinking", "speaking", "idle"]
        assert daemon.terminate() < 2.0 and daemon.proc.returncode == 0
    finally:
        server.stop()


def _require_a_checkout_others_can_enter() -> None:
    """The owner runs this checkout's Python and package: a clone in a private directory
    (`mktemp -d` makes 0700 ones) would fail later as "No module named device"."""
    for directory in Path(sys.executable).parents:
        if not directory.stat().st_mode & 0o001:
            pytest.fail(f"{directory} is closed to other users, so the owner's commands "
                        f"cannot run from this checkout: chmod o+x {directory}")
