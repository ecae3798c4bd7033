"""LED drivers and the one animator that plays a state's pattern on them.

Drivers are tiny: `pixels` (how many lights they colour separately), `show(frame)`
with one colour of levels 0..1 per pixel, and `close()`. The GPIO LEDs are one
pixel each (`set(r, g, b)` under the hood); APA102 strips live in
device.hw.apa102. The animator owns a single asyncio task; a state change cancels
it (and waits for it) before the next pattern starts, so a frame of the old
pattern can never land after the switch. gpiozero and spidev are imported only
inside the drivers' constructors: importing this module opens nothing, so
`--help` and `ctl` stay instant.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from device.errors import LedsUnavailable
from device.hw import gpio_failure
from device.hw.led_patterns import OFF, PATTERNS, WHITE, Frame, Pattern, Rgb, dark
from device.logs import SaidOnce

if TYPE_CHECKING:
    from device.config import LedsConfig

logger = logging.getLogger(__name__)

LED_KINDS = ("none", "single", "multi", "rgb")
#: A frame the driver failed (a busy bus, a pin write refused) is tried again this often
#: until it is shown: a one-off failure must not leave the last state's colour on.
RETRY_S = 1.0
#: At the stop the dark frame is tried this many times, STOP_RETRY_S apart: the box must
#: not be left lit, and the stop must not wait for LEDs that are gone.
STOP_TRIES = 3
STOP_RETRY_S = 0.05
CHANNELS = ("red", "green", "blue")


class LedDriver(Protocol):
    """Whatever shows colours: `pixels` lights, each with levels 0..1 per channel."""

    pixels: int

    def show(self, frame: Frame) -> None: ...

    def close(self) -> None: ...


class OnePixel(ABC):
    """A driver that shows one colour at a time: a frame of exactly one pixel."""

    pixels = 1

    @abstractmethod
    def set(self, r: float, g: float, b: float) -> None:
        """Show one colour, levels 0..1 per channel."""

    @abstractmethod
    def close(self) -> None:
        """Release the pins."""

    def show(self, frame: Frame) -> None:
        (colour,) = frame
        self.set(*colour)


def _level(value: float, pwm: bool) -> float:
    """A level a plain on/off pin can show: on from half brightness up."""
    return value if pwm else float(value >= 0.5)


class NullLeds(OnePixel):
    """For boxes with no LEDs: accepts every frame, shows nothing."""

    def set(self, r: float, g: float, b: float) -> None:
        pass

    def close(self) -> None:
        pass


class SingleLed(OnePixel):
    """One monochrome LED; its brightness is the brightest channel, so every state shows."""

    def __init__(self, pin: int, *, active_high: bool = True, pwm: bool = True) -> None:
        from gpiozero import LED, PWMLED

        self._pwm = pwm
        self._led = (PWMLED if pwm else LED)(pin, active_high=active_high)

    def set(self, r: float, g: float, b: float) -> None:
        self._led.value = _level(max(r, g, b), self._pwm)

    def close(self) -> None:
        self._led.close()


class MultiLeds(OnePixel):
    """Separate LEDs, one per colour channel ("red", "green", "blue"; any subset).

    Each LED shows its own channel of the pattern colour: with the default table a
    red, a green and a blue LED show white (connecting) as all three, amber
    (thinking) as red and half green. A colour none of a box's LEDs can show (blue,
    listening, on a red and a green LED) lights every LED at its brightness instead,
    as a single LED would: no state but idle is ever dark.
    """

    def __init__(
        self, pins: Mapping[str, int], *, active_high: bool = True, pwm: bool = True
    ) -> None:
        unknown = set(pins) - set(CHANNELS)
        if unknown or not pins:
            raise ValueError(f"channel LEDs need pins named among {CHANNELS}, got {sorted(pins)}")
        from gpiozero import LED, PWMLED

        self._pwm = pwm
        self._leds = {
            CHANNELS.index(name): (PWMLED if pwm else LED)(pin, active_high=active_high)
            for name, pin in pins.items()
        }

    def set(self, r: float, g: float, b: float) -> None:
        rgb = (r, g, b)
        levels = {channel: rgb[channel] for channel in self._leds}
        if not any(levels.values()):  # none of these LEDs has this colour: its brightness
            levels = dict.fromkeys(self._leds, max(rgb))
        for channel, led in self._leds.items():
            led.value = _level(levels[channel], self._pwm)

    def close(self) -> None:
        for led in self._leds.values():
            led.close()


class RgbLed(OnePixel):
    """One RGB LED; common cathode by default, `active_high=False` for common anode."""

    def __init__(self, pins: Sequence[int], *, active_high: bool = True, pwm: bool = True) -> None:
        if len(pins) != 3:
            raise ValueError(f"an RGB LED needs three pins (red, green, blue), got {list(pins)}")
        from gpiozero import RGBLED

        self._pwm = pwm
        self._led = RGBLED(*pins, active_high=active_high, pwm=pwm)

    def set(self, r: float, g: float, b: float) -> None:
        self._led.value = tuple(_level(c, self._pwm) for c in (r, g, b))

    def close(self) -> None:
        self._led.close()


def make_leds(
    kind: str,
    pins: Sequence[int] | Mapping[str, int] = (),
    *,
    active_high: bool = True,
    pwm: bool = True,
) -> LedDriver:
    """Open the LEDs a box has. Pins are BCM numbers.

    kind "none": no pins. "single": one pin. "rgb": three pins, red, green, blue.
    "multi": a mapping such as {"red": 17, "blue": 22}, or a sequence taken in
    red, green, blue order. `pwm=False` drives pins on/off only (mock pins without
    PWM, or pins where software PWM is unwanted); fades then become blinks.
    """
    if kind == "none":
        return NullLeds()
    if kind == "multi":
        if not isinstance(pins, Mapping) and len(pins) > len(CHANNELS):
            raise ValueError(f"multi LEDs take at most three pins (red, green, blue), got {pins}")
        named = pins if isinstance(pins, Mapping) else dict(zip(CHANNELS, pins, strict=False))
        return MultiLeds(named, active_high=active_high, pwm=pwm)
    if isinstance(pins, Mapping):
        raise ValueError(f"LED kind {kind!r} takes a list of pins, not a mapping")
    if kind == "single":
        if len(pins) != 1:
            raise ValueError(f"a single LED needs one pin, got {list(pins)}")
        return SingleLed(pins[0], active_high=active_high, pwm=pwm)
    if kind == "rgb":
        return RgbLed(pins, active_high=active_high, pwm=pwm)
    raise ValueError(f"unknown LED kind {kind!r}; choose one of {LED_KINDS}")


def open_leds(cfg: LedsConfig) -> LedDriver:
    """The LEDs the configuration describes, opened; LedsUnavailable says what is missing.

    Pins that cannot fade (a pin factory without PWM) show the same patterns on and off.
    """
    if cfg.kind == "apa102":
        from device.hw.apa102 import open_apa102

        return open_apa102(cfg)
    if cfg.kind == "none":
        return NullLeds()
    from gpiozero.exc import PinPWMUnsupported

    try:
        return make_leds(cfg.kind, cfg.pins, active_high=cfg.active_high)
    except PinPWMUnsupported:
        logger.warning("the LED pins cannot fade (no PWM on this pin factory): on/off patterns")
        return make_leds(cfg.kind, cfg.pins, active_high=cfg.active_high, pwm=False)


def leds_failure(exc: Exception) -> str:
    """Why the LEDs could not be opened, in words: what is missing (LedsUnavailable), or
    gpiozero's failure (no pin factory works here, a pin in use, ...)."""
    return str(exc) if isinstance(exc, LedsUnavailable) else gpio_failure(exc)


async def walk_pixels(driver: LedDriver, *, colour: Rgb = WHITE, seconds: float = 0.4) -> None:
    """Light each pixel alone, in strip order, for `seconds`, then all off.

    For `doctor leds`: a dead pixel, a swapped colour or a strip shorter than
    configured shows up as a gap in the walk.
    """
    for lit in range(driver.pixels):
        driver.show(tuple(colour if i == lit else OFF for i in range(driver.pixels)))
        await asyncio.sleep(seconds)
    driver.show(dark(driver.pixels))


class LedAnimator:
    """Plays the pattern of the current state on a driver, one task at a time."""

    def __init__(
        self,
        driver: LedDriver,
        patterns: Mapping[str, Pattern] = PATTERNS,
        *,
        frame_rate: float = 25.0,
        history_size: int = 256,
    ) -> None:
        self._driver = driver
        self._patterns = patterns
        self._frame_rate = frame_rate
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._state: str | None = None
        self._closed = False
        self._failing = SaidOnce(logger, level=logging.ERROR)  # frames the driver failed
        #: What the driver failed the last frame with; None once one shows (status, doctor).
        self.failure: str | None = None
        # (time.monotonic(), state) per change: for tests and the demo's timeline;
        # bounded because the appliance runs for months.
        self.history: deque[tuple[float, str]] = deque(maxlen=history_size)

    def blank(self) -> None:
        """Dark until the first state (the daemon's start): pixels keep the last frame sent
        them, and one sent by a daemon that was killed (the watchdog's abort, the OOM killer)
        showed it listening through the next start-up, or for good when that start failed."""
        if self._state is None and not self._closed:
            self._show(dark(self._driver.pixels))

    @property
    def state(self) -> str | None:
        """The state being shown, or None before the first show() and after aclose()."""
        return self._state

    async def show(self, state: str) -> None:
        """Stop the current pattern and start `state`'s; the current state again is a no-op."""
        pattern = self._patterns.get(state)
        if pattern is None:
            raise ValueError(f"no LED pattern for state {state!r}")
        async with self._lock:
            if state == self._state:
                return
            # Recorded before the old pattern is stopped (which yields to the loop), so
            # `ctl status` never shows a new state beside the old state's LEDs.
            self._state = state
            self.history.append((time.monotonic(), state))
            await self._start(pattern)

    async def use(self, driver: LedDriver) -> None:
        """Show on `driver` from now on (LEDs that opened late), the current state at once;
        the driver shown on until now is closed."""
        async with self._lock:
            if self._closed:  # the box stopped meanwhile
                driver.close()
                return
            await self._cancel()
            # Another part: its first failure is news, whatever the old one's were.
            old, self._driver = self._driver, driver
            self._failing = SaidOnce(logger, level=logging.ERROR)
            self.failure = None
            old.close()
            if self._state is None:
                self.blank()
            else:
                await self._start(self._patterns[self._state])

    async def _start(self, pattern: Pattern) -> None:
        """Play `pattern` for the state being shown (under the lock)."""
        await self._cancel()
        frames = pattern.frames(self._frame_rate, self._driver.pixels)
        if len(frames) == 1 and self._show(frames[0][0]):
            return
        self._task = asyncio.create_task(self._play(frames), name=f"leds-{self._state}")

    async def aclose(self) -> None:
        """Stop animating, turn every LED off and release the driver; safe to repeat."""
        async with self._lock:
            await self._cancel()
            self._state = None
            if not self._closed:
                self._closed = True
                for _ in range(STOP_TRIES):
                    if self._show(dark(self._driver.pixels)):
                        break
                    await asyncio.sleep(STOP_RETRY_S)
                try:
                    self._driver.close()
                except Exception:
                    # Shutdown goes on: the rest of the appliance still has to close.
                    logger.exception("LEDs failed to close")

    async def _cancel(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # wait() neither raises the task's CancelledError nor swallows our own.
            await asyncio.wait({task})

    def _show(self, frame: Frame) -> bool:
        """Show one frame; False if the driver failed (logged, not raised). A driver that
        fails keeps failing: said once, until it shows a frame again. One that fails now
        and then (I/O errors on a busy bus) is said at most every minute, with a count: a
        line a failure, and one for each frame shown after it, were thousands an hour."""
        try:
            self._driver.show(frame)
        except Exception as exc:
            # A broken LED must not take the appliance down with it.
            self.failure = str(exc)
            self._failing.hit(
                "LEDs failed showing %s: %s; they stay as they are until they work again",
                self._state,
                exc,
                exc_info=not isinstance(exc, OSError),  # a device's error: no bug here
                extra={"LIVE_ERROR": f"LEDs: {exc}"},
            )
            return False
        self.failure = None
        if self._failing.ended():
            logger.info("LEDs work again")
        return True

    async def _play(self, frames: Sequence[tuple[Frame, float]]) -> None:
        """The frames round and round; one frame until it is shown. After a frame the
        driver failed (said once, in `_show`) the next comes RETRY_S later."""
        while True:
            for frame, seconds in frames:
                shown = self._show(frame)
                if shown and len(frames) == 1:
                    return
                await asyncio.sleep(seconds if shown else RETRY_S)
