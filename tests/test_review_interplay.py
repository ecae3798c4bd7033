"""Review of how the day's changes meet: the button's read-back of a lost release and the
presses after it, the camera's shared switch limit, a second goAway."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from gpiozero.pins.mock import MockPin
from helpers import mock_pins

from device.config import CameraConfig
from device.hw.button import PRESSED, RELEASED, ButtonInput
from device.hw.camera import CameraFeed

PIN = 17


class LossyPin(MockPin):
    """A pin whose next edge gpiozero never reports (gpiozero#550)."""

    lose_next = False

    def _call_when_changed(self) -> None:
        if LossyPin.lose_next:
            LossyPin.lose_next = False
            return
        super()._call_when_changed()


async def test_a_tap_after_a_lost_release_is_a_press_and_a_release() -> None:
    """After a release gpiozero lost (read back from the pin), gpiozero takes the button
    for down still: the next tap it reports only as a release. A hands-free tap (start or
    end the conversation) is shorter than two reads of the pin: it must not be lost."""
    seen: list[str] = []
    LossyPin.lose_next = False
    with mock_pins(LossyPin) as pins:
        button = ButtonInput(
            PIN, lambda event, at: seen.append(event), hold_time=None, bounce_time=None
        )
        button.start()
        pin = pins.pin(PIN)
        try:
            pin.drive_low()
            await asyncio.sleep(0.05)
            LossyPin.lose_next = True
            pin.drive_high()  # gpiozero never says so; the reads do, within about a second
            await asyncio.sleep(1.2)
            assert seen == [PRESSED, RELEASED]
            pin.drive_low()  # a tap: gpiozero, taking the button for down, is silent...
            await asyncio.sleep(0.15)
            pin.drive_high()  # ...and reports this release
            await asyncio.sleep(0.1)
            assert seen == [PRESSED, RELEASED, PRESSED, RELEASED]
        finally:
            button.stop()


async def test_a_camera_that_starts_late_in_its_limit_then_stops_is_not_called_stuck(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A hang-up while the camera starts, slowly but within its limit (a cold sensor), and
    a stop that then takes as long as a camera's stop does: the stop must not be left
    with no time at all, or the journal says the camera is stuck (it may be on, its light
    stays on) for a camera that works."""
    caplog.set_level(logging.INFO, "device.hw.camera")
    limit = 1.0
    feed = CameraFeed(
        CameraConfig(source="synthetic", linger_s=5.0), lambda *_: None, switch_timeout_s=limit
    )
    start, stop = feed._source.start, feed._source.stop

    def slow_start() -> str:
        time.sleep(limit * 0.97)
        return start()

    def usual_stop() -> None:
        time.sleep(0.1)
        stop()

    feed._source.start = slow_start  # type: ignore[method-assign]
    feed._source.stop = usual_stop  # type: ignore[method-assign]
    feed.start_frames()
    await asyncio.sleep(0.05)  # the start is under way
    async with asyncio.timeout(5):
        await feed.aclose()
    stuck = [r for r in caplog.records if getattr(r, "LIVE_CAMERA", None) == "stuck"]
    assert not stuck, stuck[0].getMessage()
    await feed.shutdown()
