"""After a reboot: the service is back by itself with its volume; then the owner
updates nothing more and uninstalls, first keeping, then purging their files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hilrig import (
    CA_FILE,
    CHECKOUT,
    CONFIG,
    DROP_IN,
    KEY_FILE,
    OWNER,
    UNIT,
    Button,
    dominant_hz,
    loud_seconds,
    save,
    server_ca_as_trusted,
    sh,
    show,
    speak_a_turn,
    status,
    wait_active,
    wait_until,
)

pytestmark = [pytest.mark.after_reboot]
VOLUME = 35


def test_the_service_came_back_with_its_volume() -> None:
    wait_active()
    assert show("UnitFileState") == "enabled"
    wait_until(lambda: status().get("state") == "idle", 120, "idle after the boot")
    assert status()["volume"] == VOLUME / 100


def test_a_turn_after_the_reboot(server: Any, button: Button, tmp_path: Path) -> None:
    """A turn with the service the boot started: the local server is new since the
    reboot but signs with the first boot's CA (hilrig keeps it), the one in the file the
    service read as it started."""
    assert CA_FILE.exists()
    assert server_ca_as_trusted(), "the local server's CA is not the one the service read"
    turn = speak_a_turn(server, button, tmp_path)
    # At the volume the tool set before the reboot: the speaker's gain is its square.
    assert loud_seconds(turn.heard, 24000, threshold=0.05 * (VOLUME / 100) ** 2) >= 1.0
    assert dominant_hz(turn.heard, 24000) > 300


def uninstall(*args: str) -> None:
    result = sh(f"cd {CHECKOUT} && sudo scripts/uninstall-pi.sh {' '.join(args)}", user=OWNER,
                check=False)
    save(f"uninstall{''.join(args)}.txt", result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr


def test_uninstall_keeps_the_owners_files() -> None:
    uninstall()
    for gone in (f"/etc/systemd/system/{UNIT}", "/etc/systemd/system/live-appliance-retry.timer",
                 "/etc/systemd/system/live-appliance-retry.service", "/opt/live-appliance",
                 "/usr/local/bin/live-appliance", "/var/cache/live-appliance"):
        assert not Path(gone).exists(), gone
    assert sh(["id", "live-appliance"], check=False).returncode != 0
    assert sh(["systemctl", "is-active", UNIT], check=False).stdout.strip() != "active"
    assert CONFIG.exists() and KEY_FILE.exists()
    assert Path("/var/lib/live-appliance").exists()
    # The removed user's and group's numbers go to the next ones made: not the config.
    for kept in (CONFIG.parent, CONFIG, KEY_FILE, Path("/var/lib/live-appliance")):
        assert (kept.stat().st_uid, kept.stat().st_gid) == (0, 0), kept
    assert DROP_IN.exists(), "the owner's drop-in for the service"


def test_uninstall_purge_removes_them() -> None:
    uninstall("--purge")
    assert not Path("/etc/live-appliance").exists()
    assert not Path("/var/lib/live-appliance").exists()
    assert not DROP_IN.parent.exists()
