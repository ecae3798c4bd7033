"""LEDs that cannot be opened as the service starts (pins another program holds at boot,
a hand-started copy's, an SPI node made a moment later) come to work later, and show the
box's state once they open."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib.util
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fakes import FakeParts, RecordingLeds, config, running
from helpers import daemon_saying, mock_pins, until
from test_doctor import RUNNING, config_file, context

import device.appliance
import device.parts
from device.config import LedsConfig
from device.doctor.daemon import summary_lines
from device.doctor.gpio import check_leds
from device.doctor.progress import Progress
from device.doctor.result import Options, Status
from device.doctor.runner import format_result, held_by_the_service, run_checks
from device.errors import LedsUnavailable
from device.hw.leds import LedAnimator, LedDriver, make_leds
from device.parts import Parts
from device.states import SetupComplete


@dataclass
class LedsBusyAtBoot(FakeParts):
    """LEDs whose pins another program holds for a while after boot (or an SPI node that
    comes after the service started): opening them fails `busy` times, then works."""

    busy: int = 3

    def leds(self):  # type: ignore[no-untyped-def]
        return Parts.leds(self)  # the real part, on `open_leds` below

    def open_leds(self, _cfg: LedsConfig) -> RecordingLeds:
        if self.busy:
            self.busy -= 1
            raise OSError("GPIO busy")
        return self._keep("leds", RecordingLeds())


async def test_leds_busy_at_boot_are_tried_again_and_show_the_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The LEDs were opened once, at start: pins busy at boot left the box dark until
    someone restarted it, while the button, failing the same way, is tried again. Now
    they are tried again as the button is, and show the box's state once they open."""
    monkeypatch.setattr(device.appliance, "BUTTON_RETRY_S", 0.02, raising=False)
    caplog.set_level(logging.INFO)
    def opened_by_the_parts(parts: LedsBusyAtBoot) -> None:
        monkeypatch.setattr(device.parts, "open_leds", parts.open_leds)

    async with running(tmp_path, parts_class=LedsBusyAtBoot, prepare=opened_by_the_parts) as box:
        await until(lambda: "leds" in box.parts.made, 5.0)
        leds = box.parts.made["leds"]
        await until(lambda: leds.frames, 5.0)
        assert box.appliance.leds is not None and box.appliance.leds.state == "idle"
    assert leds.closed, "closed at the stop, dark"
    said = [r for r in caplog.records if "GPIO busy" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert any("LEDs" in r.getMessage() and "back" in r.getMessage() for r in caplog.records)


async def test_leds_on_a_box_without_gpio_are_not_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No pin driver at all (a VM, a box installed --no-gpio): one line, no tries again
    that cannot succeed."""
    from gpiozero.exc import BadPinFactory

    def no_gpio(_cfg: LedsConfig) -> RecordingLeds:
        raise BadPinFactory("Unable to load any default pin factory!")

    monkeypatch.setattr(device.parts, "open_leds", no_gpio)
    async with running(tmp_path, parts_class=LedsBusyAtBoot) as box:
        assert not any(t.get_name() == "leds-retry" for t in box.appliance._tasks)
    said = [r for r in caplog.records if r.getMessage().startswith("LEDs off")]
    assert len(said) == 1 and "tried again" not in said[0].getMessage()


@pytest.mark.skipif(importlib.util.find_spec("lgpio") is not None, reason="lgpio loads here")
async def test_leds_on_a_box_without_gpio_say_why_lgpio_did_not_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The journal's "LEDs off" line on a box with no pin driver says why lgpio, the Pi's
    own, did not load, as the doctor does: gpiozero's own words name none."""
    from gpiozero.exc import BadPinFactory

    def no_gpio(_cfg: LedsConfig) -> RecordingLeds:
        raise BadPinFactory("Unable to load any default pin factory!")

    monkeypatch.setattr(device.parts, "open_leds", no_gpio)
    async with running(tmp_path, parts_class=LedsBusyAtBoot):
        pass
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("LEDs off")]
    assert len(said) == 1 and "(lgpio: No module named 'lgpio')" in said[0], said


RED, GREEN, BLUE = 5, 6, 13
RGB = {"kind": "rgb", "pins": [RED, GREEN, BLUE]}


@dataclass
class RealLedParts(FakeParts):
    """Fake parts but the LEDs: the configured ones on gpiozero's pins, as on a Pi."""

    def leds(self) -> LedDriver:
        return Parts.leds(self)


async def test_leds_another_process_held_at_start_light_up_once_it_lets_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The service started while another copy held the LED pins (the doctor's LED check,
    a hand-started `live-appliance run`): "LEDs off", and they stayed dark for as long as
    the service ran, long after the other let go, while the box listened and spoke."""
    monkeypatch.setattr(device.appliance, "BUTTON_RETRY_S", 0.02)
    caplog.set_level(logging.INFO, "device")
    with mock_pins() as pins:
        other = make_leds("single", [BLUE], pwm=False)  # the other copy's, on one of them
        async with running(tmp_path, config(leds=RGB), parts_class=RealLedParts) as box:
            other.close()  # it stops
            await asyncio.sleep(0.2)
            await box.ctl("press")
            box.link.deliver(SetupComplete)
            await box.settle()
            assert box.state == "listening"
            await until(lambda: pins.pin(BLUE).state == 1)  # listening: blue
            assert (pins.pin(RED).state, pins.pin(GREEN).state) == (0, 0)
    said = [r.getMessage() for r in caplog.records if "LEDs" in r.getMessage()]
    assert len(said) == 2 and "in use" in said[0] and "back" in said[1], said


async def test_leds_that_open_as_the_box_stops_stay_dark() -> None:
    """A retry that opened the LEDs just as the box went dark: nothing lights up after the
    stop, and the pins are let go."""
    animator = LedAnimator(RecordingLeds())
    await animator.show("listening")
    await animator.aclose()
    late = RecordingLeds()
    await animator.use(late)
    assert late.frames == [] and late.closed


async def test_parts_that_stay_unopenable_are_tried_less_often_yet_at_least_once_a_minute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """LEDs or a button whose pins another program holds for hours: tried again after
    BUTTON_RETRY_S, each wait twice the last, never longer than REOPEN_MAX_S. Without
    the doubling the box opened the pins every 2 s for months; without its bound, a line
    freed after a day was tried again a day later, the box dark and deaf meanwhile."""
    waits: list[float] = []

    async def waited(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(device.appliance, "asyncio", SimpleNamespace(sleep=waited))
    failures = iter(range(12))

    def open_pins() -> str:
        if next(failures, None) is not None:
            raise OSError("GPIO busy")
        return "opened"

    assert await device.appliance._until_opened(open_pins) == "opened"
    assert waits == [2.0, 4.0, 8.0, 16.0, 32.0] + [60.0] * 8


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


class StoppedWriting(RecordingLeds):
    """Pixels that opened and showed, then whose writes fail with an I/O error while
    `failing` (the SPI device gone mid-run; a HAT knocked loose fails no write)."""

    failing = False

    def show(self, frame: tuple[object, ...]) -> None:  # type: ignore[override]
        if self.failing:
            raise OSError(5, "Input/output error")
        super().show(frame)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def failing_from_a_press(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Any, StoppedWriting]]:
    """A box whose LEDs opened and showed, and fail every write from a press on."""
    leds = StoppedWriting()
    monkeypatch.setattr(device.parts, "open_leds", lambda _cfg: leds)
    async with running(tmp_path, parts_class=LedsBusyAtBoot) as box:
        await until(lambda: leds.frames)
        leds.failing = True
        box.button.on_edge("pressed", asyncio.get_running_loop().time())
        await until(lambda: box.state == "connecting")
        await box.settle()
        yield box, leds


async def test_the_doctor_beside_the_service_fails_leds_that_stopped_showing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with failing_from_a_press(tmp_path, monkeypatch) as (box, leds):
        cfg = box.appliance.cfg
        line = held_by_the_service("leds", box.appliance.status(), cfg)
        assert line.status is Status.FAIL, format_result(line)
        assert "Input/output error" in line.measured
        assert "Input/output error" in "\n".join(summary_lines(box.appliance.status()))
        leds.failing = False  # reseated: the next frame shows, and all is well again
        await until(lambda: held_by_the_service("leds", box.appliance.status(), cfg).status
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


async def test_leds_that_stopped_showing_are_not_said_to_be_unopened_pins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Open LEDs whose writes fail are tried again every frame, a second apart: `ctl
    status` said they were tried "less often the longer it lasts", and the doctor beside
    the service told the owner to correct [leds] kind and pins or free pins another
    program holds, "once they open": the pins are open, and nobody else holds them."""
    async with failing_from_a_press(tmp_path, monkeypatch) as (box, _):
        status = box.appliance.status()
        line = held_by_the_service("leds", status, box.appliance.cfg)
        assert line.status is Status.FAIL, format_result(line)
        fix = line.fix or ""
        assert "free its pins" not in fix and "once they open" not in fix, fix
        said = next(text for text in summary_lines(status) if text.startswith("leds:"))
        assert "less often" not in said, said


async def test_ctl_status_says_leds_whose_writes_fail_are_tried_again_every_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ctl status` on a box whose LEDs' writes fail says they are tried again (at each
    frame): said with no word of a retry, the owner takes them for given up on, and
    restarts the service for nothing."""
    from test_leds_opened_late import failing_from_a_press

    from device.doctor.daemon import summary_lines

    async with failing_from_a_press(tmp_path, monkeypatch) as (box, _):
        said = next(t for t in summary_lines(box.appliance.status()) if t.startswith("leds:"))
    assert said.endswith("(each frame tried again until one shows)"), said
