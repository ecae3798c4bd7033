"""The push button: a GPIO pin wired to ground, read with the internal pull-up (or, for a
module that drives the pin high while pressed, with the pull-down).

gpiozero calls back from its own threads; each edge is handed to the asyncio
loop as `callback(event, time.monotonic())` with `loop.call_soon_threadsafe`, so
the rest of the appliance only ever sees button events on the loop. The pin is
opened in start() and released in stop(); gpiozero is imported only then. A start
that fails (the line busy) raises, and may be tried again.

The pin is a plain `DigitalInputDevice`, and the long press a timer on the loop:
gpiozero's `Button` keeps a thread for its hold time that wakes ten times a
second for as long as the box runs, pressed or not.

While the button is down its pin is also read every CHECK_S on the loop: gpiozero
can lose an edge (its software debounce reads the level in the callback, and may
read the contact mid-bounce: gpiozero#550, "presses but not releases"), and a lost
release would leave the microphone streaming the room, the LEDs saying listening,
until the appliance's bounds seconds later.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from typing import Any

ButtonCallback = Callable[[str, float], object]

PRESSED = "pressed"
RELEASED = "released"
LONG_PRESS = "long_press"

#: How often the pin is read while the button is down (or while gpiozero, having lost a
#: release, takes it for down still): a level that differs from the last edge at two
#: reads in a row (not an edge on its way to the loop, not a bounce) is reported as one.
CHECK_S = 0.5


class ButtonInput:
    """Reports "pressed", "released" and, after `hold_time` seconds held, "long_press"."""

    def __init__(
        self,
        pin: int,
        callback: ButtonCallback,
        *,
        hold_time: float | None = 2.0,
        bounce_time: float | None = 0.02,
        active_high: bool = False,
    ) -> None:
        """`pin` is a BCM number; `hold_time=None` disables long presses; `active_high`: the
        pin is driven high while pressed (read with the pull-down), not pulled to ground."""
        self.pin = pin
        self._active_high = active_high
        self._callback = callback
        self._hold_time = hold_time
        self._bounce_time = bounce_time
        self._device: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._held: asyncio.TimerHandle | None = None  # the long press, while pressed
        self._down = False  # as last reported
        #: A release gpiozero never saw was reported: it takes the button for down still,
        #: and will not report the next press (only its release).
        self._behind = False
        self._check: asyncio.TimerHandle | None = None  # the next read of the pin
        self._differs_since: float | None = None  # the pin read otherwise than reported
        self._read_release_at = 0.0  # when the reads last found a release gpiozero had not
        self._held_at_open = False  # it read pressed as it opened, and no edge came since

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Open the pin; events go to `loop`, by default the running one."""
        if self._device is not None:
            return
        loop = self._loop = loop or asyncio.get_running_loop()

        def handler(event: str) -> Callable[[], None]:
            def on_edge() -> None:  # runs in a gpiozero thread
                # RuntimeError: the loop has closed, the appliance is shutting down.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._edge, event, time.monotonic())

            return on_edge

        device = _input_device()(
            self.pin, pull_up=not self._active_high, bounce_time=self._bounce_time
        )
        device.when_activated = handler(PRESSED)
        device.when_deactivated = handler(RELEASED)
        self._device = device
        self._held_at_open = bool(device.is_active)

    def _edge(self, event: str, at: float) -> None:
        """An edge gpiozero reported, on the loop."""
        if self._device is None:
            return  # stopped while it was on its way
        self._held_at_open = False
        if event == RELEASED:
            if self._behind and not self._down and self._released_after_reads():
                # Behind, gpiozero reports a press only by its release: one too short for
                # two reads (a hands-free tap) is a press all the same, not nothing.
                self._changed(PRESSED, self._differs_since or at)
            self._behind = False  # gpiozero has seen a release of its own: it is in step
        self._changed(event, at)

    def _changed(self, event: str, at: float) -> None:
        """Reported (not twice in a row), the long press timed from a press, and the pin
        watched while it is down."""
        self._differs_since = None
        if (event == PRESSED) == self._down:
            return  # the read reported it first (gpiozero's own release, in step again)
        self._down = event == PRESSED
        self._cancel_hold()
        assert self._loop is not None
        if self._down and self._hold_time is not None:
            wait_s = max(0.0, at + self._hold_time - time.monotonic())
            self._held = self._loop.call_later(wait_s, self._long_press)
        self._watch()
        self._callback(event, at)

    def _released_after_reads(self) -> bool:
        """Whether gpiozero's release came after the one the reads found (a tap it saw only
        by its release), not that same release reported late (its callback thread held up
        past two reads): told apart by the edge's own time, which gpiozero keeps from the
        pin's event. Unknown (pressed again already), it is taken for the late one: a tap
        missed costs a press, a press made up sends the room as a question."""
        age = self._device.inactive_time
        return age is not None and time.monotonic() - age > self._read_release_at

    def _watch(self) -> None:
        if (self._down or self._behind) and self._check is None and self._loop is not None:
            self._check = self._loop.call_later(CHECK_S, self._read)

    def _read(self) -> None:
        """The pin's level against what was reported: an edge gpiozero lost is reported
        when two reads agree on it, at the first of them."""
        self._check = None
        if self._device is None:
            return
        now = time.monotonic()
        if bool(self._device.is_active) == self._down:
            self._differs_since = None
        elif self._differs_since is None:
            self._differs_since = now
        else:
            since = self._differs_since
            self._behind = self._down  # a release gpiozero missed: it will miss a press
            if self._down:
                self._read_release_at = since
            self._changed(RELEASED if self._down else PRESSED, since)
        self._watch()

    def _long_press(self) -> None:
        self._held = None
        self._callback(LONG_PRESS, time.monotonic())

    def _cancel_hold(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.cancel()

    def stop(self) -> None:
        """Release the pin; no new event starts after this returns (call it on the loop)."""
        device, self._device = self._device, None
        self._cancel_hold()
        check, self._check = self._check, None
        if check is not None:
            check.cancel()
        self._down = self._behind = self._held_at_open = False
        self._differs_since = None
        if device is not None:
            device.close()

    @property
    def is_pressed(self) -> bool:
        """Whether the button is down now (False while stopped)."""
        return bool(self._device is not None and self._device.is_active)

    @property
    def held_since_open(self) -> bool:
        """Whether it has read pressed since it was opened, with no edge since: nobody's
        press (something on it, a short, the wrong pin), which is never reported as one."""
        return self._held_at_open and self.is_pressed


@functools.cache
def _input_device() -> type[Any]:
    """gpiozero's DigitalInputDevice, quiet when one that failed to open is collected.

    A line another process holds fails lgpio's claim, and gpiozero's clean-up of the
    half-made device claims it again to reset it, which fails too: once in the
    constructor (whose error is the one raised), and again in `__del__`, which Python
    prints to stderr as a traceback, "Exception ignored in ... GPIOBase.__del__": the
    journal, at every try while the appliance waits for its button."""
    from gpiozero import DigitalInputDevice

    class QuietInputDevice(DigitalInputDevice):
        def __del__(self) -> None:
            with contextlib.suppress(Exception):
                super().__del__()

    return QuietInputDevice
