"""5. A sound card that goes away while the service runs, and comes back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hilrig import (
    Button,
    cursor,
    daemon_entries,
    dominant_hz,
    loopback_card,
    loud_seconds,
    save,
    sh,
    speak_a_turn,
    state,
    states,
    wait_active,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("installed")

#: The loopback card's platform device: unbinding it is what unplugging a USB sound
#: card does (the card disconnects under the open streams). `rmmod snd-aloop` itself
#: is refused while the service holds the card open.
DRIVER = Path("/sys/bus/platform/drivers/snd_aloop")


def test_the_card_goes_and_comes_back(server: Any, button: Button,
                                      tmp_path: Path) -> None:
    wait_active()
    wait_until(lambda: state() == "idle", 60, "idle")
    refused = sh(["modprobe", "-r", "snd-aloop"], check=False)
    device = next(p.name for p in DRIVER.iterdir() if p.name.startswith("snd_aloop"))
    mark = cursor()
    (DRIVER / "unbind").write_text(device)
    try:
        wait_until(lambda: loopback_card() is None, 30, "the card gone")
        wait_until(lambda: "error" in states(mark), 120, "the error state")
        errors = [e for e in daemon_entries(mark)
                  if int(e.get("PRIORITY", 6)) <= 3 and "LIVE_STATE" not in e]
        save("card-gone-journal.txt", "\n".join(e.get("MESSAGE", "") for e in
                                                   daemon_entries(mark)))
        assert len(errors) <= 1, [e.get("MESSAGE") for e in errors]
        assert sh(["systemctl", "is-active", "live-appliance"], check=False).stdout.strip() \
            == "active", "the service itself must stay up"
    finally:
        (DRIVER / "bind").write_text(device)
    wait_until(lambda: loopback_card() is not None, 30, "the card back")
    wait_until(lambda: state() == "idle", 180, "idle again, by itself")
    save("card-gone-refused-rmmod.txt", refused.stdout + refused.stderr)
    turn = speak_a_turn(server, button, tmp_path)
    assert loud_seconds(turn.heard, 24000) >= 1.0
    assert dominant_hz(turn.heard, 24000) > 300
