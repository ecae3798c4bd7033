"""Cold boot: parts that are not there yet when the service starts come to work later."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakes import FakeParts, RecordingLeds, running
from helpers import until

import device.appliance
import device.parts
from device.config import LedsConfig
from device.parts import Parts


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
