"""LEDs that open but whose writes fail: what the doctor tells the owner to do (review of
stop 55)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from test_doctor import context

from device.doctor.gpio import check_leds
from device.doctor.result import Options, Status


async def test_leds_whose_writes_fail_are_not_sent_to_reseat_a_hat_that_fails_no_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver's write failed (an I/O error on the SPI device): the doctor's fix sent the
    owner to press the HAT onto the header and check the strip's wires, which fail no write
    (the README says so): they reseated it, and the same FAIL came back."""

    class FailingStrip:
        pixels = 3

        def show(self, frame: object) -> None:
            raise OSError(errno.EIO, "Input/output error")

        def close(self) -> None: ...

    monkeypatch.setattr("device.hw.leds.open_leds", lambda cfg: FailingStrip())
    monkeypatch.setattr("device.doctor.gpio.LED_STEP_S", 0.01)
    result = await check_leds(context(tmp_path, Options(), leds={"kind": "apa102", "count": 3}))
    assert result.status is Status.FAIL and "Input/output error" in result.measured, result
    fix = (result.fix or "").lower()
    assert "connection" not in fix and "pressed fully" not in fix, fix
    assert "reboot" in fix, fix
