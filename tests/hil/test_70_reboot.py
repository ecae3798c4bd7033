"""Before the reboot: the volume the set_volume tool sets, then ask for the reboot."""

from __future__ import annotations

from typing import Any

import pytest
from hilrig import IN_VM, RESULTS, Button, speak_a_turn, state, status, wait_until

pytestmark = pytest.mark.usefixtures("installed")
VOLUME = 35


def test_the_tool_sets_the_volume(server: Any, button: Button, tmp_path: Any) -> None:
    server.call(lambda: server.server.queue_tool_call("set_volume", {"percent": VOLUME}))
    speak_a_turn(server, button, tmp_path)
    # The daemon's status reply (`ctl status` as a command: test_40_owner.py).
    wait_until(lambda: status().get("volume") == VOLUME / 100, 60, "the new volume")
    assert state() == "idle"


@pytest.mark.skipif(not IN_VM, reason="--here does not reboot the Pi")
def test_ask_for_the_reboot() -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "reboot-requested").write_text(f"volume {VOLUME}\n")
