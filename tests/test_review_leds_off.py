"""LEDs the running service could not open (no SPI device: `dtparam=spi=on` missing; pins
another program holds): the box runs dark, and one journal line at start said why. The
owner who asks later, with `ctl status` or the doctor, must be told too: the doctor said
the LEDs were "in use by the running service", and to stop it to test them."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import RecordingLeds, running
from helpers import until
from test_leds_opened_late import LedsBusyAtBoot

import device.appliance
import device.parts
from device.config import LedsConfig
from device.doctor.daemon import summary_lines
from device.doctor.result import Status
from device.doctor.runner import format_result, held_by_the_service
from device.errors import LedsUnavailable

NO_SPI = (
    "no SPI device /dev/spidev0.1 (SPI bus 0, chip select 1): add dtparam=spi=on to "
    "/boot/firmware/config.txt and reboot"
)


async def test_the_doctor_beside_the_service_fails_the_leds_it_could_not_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_spi(_cfg: LedsConfig) -> RecordingLeds:
        raise LedsUnavailable(NO_SPI)

    monkeypatch.setattr(device.parts, "open_leds", no_spi)
    async with running(tmp_path, parts_class=LedsBusyAtBoot) as box:
        status = box.appliance.status()
        line = held_by_the_service("leds", status, box.appliance.cfg)
        assert line.status is Status.FAIL, format_result(line)
        assert "dtparam=spi=on" in line.measured
        said = "\n".join(summary_lines(status))  # `ctl status`
        assert "leds:" in said and "dtparam=spi=on" in said, said


async def test_leds_that_open_later_are_no_longer_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(device.appliance, "BUTTON_RETRY_S", 0.02, raising=False)

    def opened_by_the_parts(parts: LedsBusyAtBoot) -> None:
        monkeypatch.setattr(device.parts, "open_leds", parts.open_leds)

    async with running(tmp_path, parts_class=LedsBusyAtBoot, prepare=opened_by_the_parts) as box:
        line = held_by_the_service("leds", box.appliance.status(), box.appliance.cfg)
        assert line.status is Status.FAIL, format_result(line)
        await until(lambda: "leds" in box.parts.made)
        await until(lambda: box.parts.made["leds"].frames)
        line = held_by_the_service("leds", box.appliance.status(), box.appliance.cfg)
        assert line.status is Status.SKIP, format_result(line)
