"""APA102 pixels on plain GPIO pins (the Voice Bonnet's DotStars), through the real
`open_apa102` and `LedAnimator` on gpiozero's mock pins: what the pixels are sent."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from gpiozero.pins.mock import MockPin
from helpers import mock_pins, until

from device.config import LedsConfig
from device.hw.apa102 import GpioTransport, encode, open_apa102
from device.hw.leds import LedAnimator

DATA, CLOCK = 5, 6


class WiredPin(MockPin):
    """A pin whose clock's rising edges record the data pin's level (what the pixels read),
    and whose writes fail while `failing` is above zero (a loose HAT, a pin driver error)."""

    failing = 0
    bits: ClassVar[list[int]] = []  # what the pixels read: one wire for the test

    def _set_state(self, value: Any) -> None:
        if WiredPin.failing and self.info.name == f"GPIO{CLOCK}":
            WiredPin.failing -= 1
            raise OSError(5, "Input/output error")
        rising = value and not self._state
        super()._set_state(value)
        if rising and self.info.name == f"GPIO{CLOCK}":
            WiredPin.bits.append(int(self.factory.pin(DATA).state))


@pytest.fixture
def pins() -> Iterator[Any]:
    WiredPin.failing, WiredPin.bits = 0, []
    with mock_pins(WiredPin) as factory:
        yield factory


def last_update(pixels: int) -> bytes:
    """The last whole update the pixels were sent, as bytes."""
    size = len(encode(((0.0, 0.0, 0.0),) * pixels))
    bits = WiredPin.bits[-size * 8 :]
    return bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))


async def test_pixels_whose_pins_fail_once_show_the_next_state_all_the_same(
    pins: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A pin write that fails once (mid-frame) must not leave the pixels showing a state the
    box has left: listening's blue on, the microphone off, for the rest of the box's life."""
    cfg = LedsConfig(kind="apa102", count=3, data_pin=DATA, clock_pin=CLOCK, brightness=1.0)
    driver = open_apa102(cfg)
    assert isinstance(driver._transport, GpioTransport)
    animator = LedAnimator(driver)
    try:
        await animator.show("listening")
        blue = encode(((0.0, 0.0, 1.0),) * 3)
        await until(lambda: last_update(3) == blue)
        WiredPin.failing = 1
        with caplog.at_level(logging.INFO):
            await animator.show("idle")
            dark = encode(((0.0, 0.0, 0.0),) * 3)
            await until(lambda: last_update(3) == dark, within=3)
            await until(lambda: "work again" in caplog.text)
        said = [r.getMessage() for r in caplog.records if "pixels" in r.getMessage()]
        assert len(said) == 2, said  # the failure, and that they work again: no more
    finally:
        await animator.aclose()
        await asyncio.sleep(0)
