"""A button that has read pressed since the service opened it (a short, a button wired to
the wrong pin, something resting on it at boot): the service ignores it, and says so once
in the journal; the owner who runs the doctor beside the running service is told too."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fakes import running
from helpers import mock_pins, until
from test_button_faults import PIN, PinParts, Shorted
from test_doctor import context

from device.doctor.daemon import summary_lines
from device.doctor.gpio import check_button
from device.doctor.result import Options, Status
from device.doctor.runner import format_result, held_by_the_service


async def test_the_doctor_beside_the_service_tells_of_a_button_held_since_it_opened(
    tmp_path: Path,
) -> None:
    with mock_pins(Shorted) as pins:
        pin = pins.pin(PIN)
        pin.drive_low()
        async with running(tmp_path, parts_class=PinParts) as box:
            await asyncio.sleep(0.1)
            await box.settle()
            assert box.state == "idle"
            line = held_by_the_service("button", box.appliance.status(), box.appliance.cfg)
            assert line.status is Status.WARN, format_result(line)
            assert f"GPIO {PIN} reads pressed" in line.measured
            assert "ground" in (line.fix or "")
            said = "\n".join(summary_lines(box.appliance.status()))  # `ctl status`
            assert "button:   reads pressed since" in said, said
            # Let go and pressed as a person does: a press like any other, nothing to tell.
            pin.drive_high()
            pin.drive_low()
            await until(lambda: box.state == "connecting")
            line = held_by_the_service("button", box.appliance.status(), box.appliance.cfg)
            assert line.status is Status.SKIP, format_result(line)
            assert "button:" not in "\n".join(summary_lines(box.appliance.status()))


@pytest.mark.parametrize("wired", ["shorted", "busy"])
async def test_the_doctor_not_waiting_for_a_press_still_tells_a_miswired_button(
    tmp_path: Path, wired: str
) -> None:
    """Not from a terminal (over `ssh box live-appliance doctor`, from a script) or with
    --no-button, nobody is there to press: but a pin that reads pressed, or that cannot be
    opened, needs nobody to be seen, and the line was a SKIP that let the doctor pass."""
    from gpiozero import LED

    with mock_pins(Shorted if wired == "shorted" else None) as pins:
        held = LED(PIN) if wired == "busy" else None  # another program holds the line
        if wired == "shorted":
            pins.pin(PIN).drive_low()
        try:
            result = await check_button(context(tmp_path, Options(button=False)))
        finally:
            if held is not None:
                held.close()
    wanted = Status.WARN if wired == "shorted" else Status.FAIL
    assert result.status is wanted, format_result(result)
    assert f"GPIO {PIN}" in result.measured


async def test_the_doctor_not_waiting_for_a_press_skips_a_button_that_reads_released(
    tmp_path: Path,
) -> None:
    with mock_pins():
        result = await check_button(context(tmp_path, Options(button=False)))
    assert result.status is Status.SKIP and "not waiting for a press" in result.measured
