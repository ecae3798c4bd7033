"""The push button: a GPIO pin wired to ground, read with the internal pull-up.

gpiozero calls back from its own threads; each edge is handed to the asyncio
loop as `callback(event, time.monotonic())` with `loop.call_soon_threadsafe`, so
the rest of the appliance only ever sees button events on the loop. The pin is
opened in start() and released in stop(); gpiozero is imported only then.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

ButtonCallback = Callable[[str, float], object]

PRESSED = "pressed"
RELEASED = "released"
LONG_PRESS = "long_press"


class ButtonInput:
    """Reports "pressed", "released" and, after `hold_time` seconds held, "long_press"."""

    def __init__(
        self,
        pin: int,
        callback: ButtonCallback,
        *,
        hold_time: float | None = 2.0,
        bounce_time: float | None = 0.02,
    ) -> None:
        """`pin` is a BCM number; `hold_time=None` disables long presses."""
        self.pin = pin
        self._callback = callback
        self._hold_time = hold_time
        self._bounce_time = bounce_time
        self._button: Any = None

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Open the pin; events go to `loop`, by default the running one."""
        if self._button is not None:
            return
        from gpiozero import Button

        loop = loop or asyncio.get_running_loop()

        def handler(event: str) -> Callable[[], None]:
            def on_edge() -> None:  # runs in a gpiozero thread
                # RuntimeError: the loop has closed, the appliance is shutting down.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._callback, event, time.monotonic())

            return on_edge

        button = Button(self.pin, pull_up=True, bounce_time=self._bounce_time)
        button.when_pressed = handler(PRESSED)
        button.when_released = handler(RELEASED)
        if self._hold_time is not None:
            button.hold_time = self._hold_time
            button.when_held = handler(LONG_PRESS)
        self._button = button

    def stop(self) -> None:
        """Release the pin; no new event starts after this returns."""
        button, self._button = self._button, None
        if button is not None:
            button.close()

    @property
    def is_pressed(self) -> bool:
        """Whether the button is down now (False while stopped)."""
        return bool(self._button is not None and self._button.is_pressed)
