"""The push button on a gpiozero mock pin: edges arrive as events on the loop."""

from __future__ import annotations

import asyncio
import gc
import threading

import pytest
from helpers import mock_pins

from device.hw.button import ButtonInput

PIN = 27


@pytest.fixture
def pin():
    with mock_pins() as factory:
        yield factory.pin(PIN)


class Events:
    """Collects (event, time) on the loop and lets a test wait for a count."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, float]] = []
        self.threads: set[int] = set()
        self._changed = asyncio.Event()

    def __call__(self, event: str, at: float) -> None:
        self.threads.add(threading.get_ident())
        self.seen.append((event, at))
        self._changed.set()

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.seen]

    async def wait_for(self, count: int) -> list[str]:
        async with asyncio.timeout(5):
            while len(self.seen) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.names


async def test_press_and_release_arrive_on_the_loop(pin) -> None:
    events = Events()
    button = ButtonInput(PIN, events, hold_time=None, bounce_time=None)
    button.start()
    assert not button.is_pressed  # the pull-up holds the pin high
    pin.drive_low()
    assert await events.wait_for(1) == ["pressed"]
    assert button.is_pressed
    pin.drive_high()
    assert await events.wait_for(2) == ["pressed", "released"]
    assert events.threads == {threading.get_ident()}
    assert events.seen[0][1] <= events.seen[1][1]
    button.stop()


async def test_holding_past_hold_time_is_a_long_press(pin) -> None:
    events = Events()
    button = ButtonInput(PIN, events, hold_time=0.1, bounce_time=None)
    button.start(asyncio.get_running_loop())
    pin.drive_low()
    assert await events.wait_for(2) == ["pressed", "long_press"]
    pin.drive_high()
    assert await events.wait_for(3) == ["pressed", "long_press", "released"]
    button.stop()


async def test_a_short_press_is_not_a_long_press(pin) -> None:
    events = Events()
    button = ButtonInput(PIN, events, hold_time=0.1, bounce_time=None)
    button.start()
    pin.drive_low()
    pin.drive_high()
    await events.wait_for(2)
    await asyncio.sleep(0.2)
    assert events.names == ["pressed", "released"]
    button.stop()


async def test_hold_time_none_never_reports_a_long_press(pin) -> None:
    events = Events()
    button = ButtonInput(PIN, events, hold_time=None, bounce_time=None)
    button.start()
    pin.drive_low()
    await events.wait_for(1)
    await asyncio.sleep(1.2)  # past gpiozero's own default hold time (1 s)
    assert events.names == ["pressed"]
    button.stop()


async def test_the_button_keeps_no_thread_of_its_own(pin) -> None:
    """gpiozero's Button keeps a thread for its hold time that wakes ten times a second
    for as long as the box runs; the long press here is a timer on the loop."""
    before = {thread.ident for thread in threading.enumerate()}
    events = Events()
    button = ButtonInput(PIN, events, hold_time=0.1, bounce_time=None)
    button.start()
    try:
        assert {thread.ident for thread in threading.enumerate()} == before
        pin.drive_low()
        assert await events.wait_for(2) == ["pressed", "long_press"]
    finally:
        button.stop()


async def test_a_press_released_before_the_hold_time_leaves_no_long_press_behind(pin) -> None:
    events = Events()
    button = ButtonInput(PIN, events, hold_time=0.2, bounce_time=None)
    button.start()
    pin.drive_low()
    await events.wait_for(1)
    await asyncio.sleep(0.1)
    pin.drive_high()
    pin.drive_low()  # pressed again: the hold counts from here
    await events.wait_for(3)
    await asyncio.sleep(0.15)
    assert events.names == ["pressed", "released", "pressed"], "0.15 s into the second press"
    assert await events.wait_for(4) == ["pressed", "released", "pressed", "long_press"]
    button.stop()


async def test_nothing_opens_before_start_and_stop_releases_the_pin(pin) -> None:
    from gpiozero import Button

    events = Events()
    button = ButtonInput(PIN, events)
    Button(PIN).close()  # constructing ButtonInput did not reserve the pin
    button.start()
    button.stop()
    button.stop()  # harmless twice
    pin.drive_low()
    await asyncio.sleep(0.1)
    assert events.seen == []
    Button(PIN).close()  # the pin is free again


def test_an_edge_after_the_loop_closed_is_dropped_quietly(pin) -> None:
    seen: list[str] = []
    loop = asyncio.new_event_loop()
    button = ButtonInput(PIN, lambda event, _t: seen.append(event), hold_time=None)
    button.start(loop)
    loop.close()
    pin.drive_low()  # must not raise into gpiozero's thread
    button.stop()
    assert seen == []


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
async def test_a_pin_busy_at_the_first_open_opens_at_the_next() -> None:
    """lgpio's "GPIO busy" (a line another process holds) as gpiozero raises it: the
    failed open reserves nothing, so the appliance's next try (it retries) gets the pin."""
    from gpiozero.pins.mock import MockPin

    class BusyOnce(MockPin):
        busy = True

        def _set_function(self, value: str) -> None:
            if BusyOnce.busy:
                raise OSError("GPIO busy")
            super()._set_function(value)

    with mock_pins(BusyOnce) as factory:
        events = Events()
        button = ButtonInput(PIN, events, hold_time=None, bounce_time=None)
        for _ in range(3):  # each failed try collected with no traceback on stderr
            with pytest.raises(OSError, match="GPIO busy"):
                button.start()
            gc.collect()
        assert not button.is_pressed
        BusyOnce.busy = False
        button.start()
        factory.pin(PIN).drive_low()
        assert await events.wait_for(1) == ["pressed"]
        button.stop()
