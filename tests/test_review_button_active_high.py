"""A button set `active_high` that reads pressed with nobody at it: what the doctor tells
the owner to do (review of stop 55)."""

from __future__ import annotations

from pathlib import Path

from helpers import mock_pins
from test_doctor import context

from device.doctor.gpio import check_button
from device.doctor.result import Options, Status


async def test_an_active_high_button_held_at_rest_is_not_told_to_set_active_high(
    tmp_path: Path,
) -> None:
    """A module that drives its pin high at rest and low while touched (active low),
    configured `active_high = true`: the pin reads pressed before anyone pressed it, and
    the doctor's fix said the button goes to ground and such a module "needs [button]
    active_high = true", the setting that already is, and is the cause."""
    from gpiozero.pins.mock import MockPin

    class DrivenHighAtRest(MockPin):
        def _set_pull(self, value: str) -> None:
            self._pull = value  # the module's output wins over the pull-down: high
            self.drive_high()

    ctx = context(tmp_path, Options(button_wait_s=0.2), button={"active_high": True})
    with mock_pins(DrivenHighAtRest):
        result = await check_button(ctx)
    assert result.status is Status.WARN and "reads pressed" in result.measured, result
    assert "active_high = true" not in (result.fix or ""), result.fix
    assert "active_high = false" in (result.fix or ""), result.fix
