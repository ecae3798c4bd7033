"""`doctor leds` on LEDs that open but fail to show (a HAT's pixels unseated, an SPI bus
that answers EIO): the owner watching dark LEDs must not be told they passed."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_doctor import context

from device.doctor.gpio import check_leds
from device.doctor.result import Options, Status
from device.doctor.runner import Check, _run_one


class Unseated:
    """Pixels whose every frame fails, as an SPI write to a HAT that is not seated."""

    def __init__(self, pixels: int) -> None:
        self.pixels = pixels
        self.closed = False

    def show(self, frame: tuple[object, ...]) -> None:
        raise OSError(5, "Input/output error")

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("pixels", [1, 3])
async def test_doctor_leds_fails_leds_that_showed_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pixels: int
) -> None:
    driver = Unseated(pixels)
    monkeypatch.setattr("device.hw.leds.open_leds", lambda cfg: driver)
    monkeypatch.setattr("device.doctor.gpio.LED_STEP_S", 0.01)
    ctx = context(tmp_path, Options(), leds={"kind": "apa102", "count": pixels})
    result = await _run_one(Check("leds", check_leds, "showing every state"), ctx)
    assert result.status is Status.FAIL, result
    assert "Input/output error" in result.measured
    assert "Report this" not in (result.fix or ""), result.fix  # no bug: the hardware's
    assert driver.closed
