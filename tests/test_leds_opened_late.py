"""LEDs that cannot be opened as the service starts (pins another program holds at boot,
a hand-started copy's, an SPI node made a moment later) come to work later, and show the
box's state once they open."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from fakes import FakeParts, RecordingLeds, config, running
from helpers import mock_pins, until

import device.appliance
import device.parts
from device.config import LedsConfig
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
