"""LEDs the running service could not open (no SPI device: `dtparam=spi=on` missing; pins
another program holds): the box runs dark, and one journal line at start said why. The
owner who asks later, with `ctl status` or the doctor, must be told too: the doctor said
the LEDs were "in use by the running service", and to stop it to test them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fakes import RecordingLeds, running
from helpers import daemon_saying, until
from test_doctor import RUNNING, config_file
from test_leds_opened_late import LedsBusyAtBoot

import device.appliance
import device.parts
from device.config import LedsConfig
from device.doctor.daemon import summary_lines
from device.doctor.progress import Progress
from device.doctor.result import Options, Status
from device.doctor.runner import format_result, held_by_the_service, run_checks
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


class Unseated(RecordingLeds):
    """Pixels that opened, then stopped taking frames (a HAT knocked loose mid-run)."""

    failing = False

    def show(self, frame: tuple[object, ...]) -> None:  # type: ignore[override]
        if self.failing:
            raise OSError(5, "Input/output error")
        super().show(frame)  # type: ignore[arg-type]


async def test_the_doctor_beside_the_service_fails_leds_that_stopped_showing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    leds = Unseated()
    monkeypatch.setattr(device.parts, "open_leds", lambda _cfg: leds)
    async with running(tmp_path, parts_class=LedsBusyAtBoot) as box:
        await until(lambda: leds.frames)
        leds.failing = True
        box.button.on_edge("pressed", asyncio.get_running_loop().time())
        await until(lambda: box.state == "connecting")
        await box.settle()
        line = held_by_the_service("leds", box.appliance.status(), 17)
        assert line.status is Status.FAIL, format_result(line)
        assert "Input/output error" in line.measured
        assert "Input/output error" in "\n".join(summary_lines(box.appliance.status()))
        leds.failing = False  # reseated: the next frame shows, and all is well again
        await until(lambda: held_by_the_service("leds", box.appliance.status(), 17).status
                    is Status.SKIP)  # fmt: skip


@pytest.mark.parametrize(
    ("check", "section", "words"),
    [
        ("leds", {"leds": {"kind": "none"}}, "no LEDs configured"),
        ("camera", {"camera": {"enabled": False}}, "camera disabled"),
    ],
)
async def test_the_doctor_beside_the_service_says_a_part_the_box_has_not_is_not_there(
    tmp_path: Path, systemctl: Any, check: str, section: dict[str, Any], words: str
) -> None:
    """`[leds] kind = "none"` (the speakerphone profile), `[camera] enabled = false`: beside
    the running service the line said they were in use by it, and to stop it to test them:
    there is nothing to test."""
    systemctl(**RUNNING)
    said = {"ready": True, "state": "idle", "status": "idle", "session_open": False,
            "faults": [], "turns": []}  # fmt: skip
    async with daemon_saying(said) as sock:
        path = config_file(tmp_path, control={"socket": str(sock)}, **section)
        (line,) = await run_checks((check,), Options(button=False), str(path), Progress(), print)
    assert line.status is Status.SKIP and words in line.measured, line
