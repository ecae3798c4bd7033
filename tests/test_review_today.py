"""Review of the day's change: the places where commits written apart meet."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from device import appliance as appliance_module
from device import workers
from device.control import AlreadyRunning, single_instance


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
