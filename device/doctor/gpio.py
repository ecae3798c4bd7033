"""The pin checks: every LED state pattern shown in turn, and one press of the button."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from device.doctor.result import Context, Result, Status
from device.hw import gpio_failure, no_pin_driver
from device.hw.led_patterns import Frame
from device.states import State

if TYPE_CHECKING:
    from device.config import ButtonConfig
    from device.hw.leds import LedDriver

LED_STEP_S = 0.5

FIX_PINS = "Check [leds] kind and pins (BCM numbers) and that no other program uses those pins."
#: The driver's writes fail (the SPI device gone, an I/O error): a HAT not pressed fully
#: on or a strip's loose wire fails none, and reseating them changed nothing.
FIX_SHOWING = (
    "The LEDs' driver fails its writes, as the line says (a loose HAT or wire fails none: "
    "watch the LEDs during the check for those): reboot, then run live-appliance doctor "
    "leds again; still failing, report it with the output of live-appliance doctor leds "
    "--json."
)
FIX_NO_GPIO = (
    "This machine has no GPIO that gpiozero can drive: on a Pi, `sudo apt install "
    "python3-lgpio`; on any other machine {what}."
)


def fix_held(button: ButtonConfig) -> str:
    """What to do about a pin that reads pressed with nobody at it, the doctor's own or the
    service's, by the wiring `[button] active_high` expects: with it set, "set active_high =
    true" named as the cure the setting that reads a module high at rest as a press."""
    if button.active_high:
        return (
            f"Check the wiring: the module's output on GPIO {button.pin} reads high with "
            "nobody at it; a module that drives it low while pressed, or a button to ground, "
            "needs [button] active_high = false. A short to 3.3 V or the wrong pin reads as "
            "held down too."
        )
    return (
        f"Check the wiring: the button goes from GPIO {button.pin} to ground and is open when "
        "not pressed; a short or the wrong pin reads as held down. A module that drives the "
        "pin high while pressed (a touch sensor) needs [button] active_high = true."
    )


class _Watched:
    """A driver whose first failure to show a frame is kept: the animator only logs them
    (the box runs on with broken LEDs), and the doctor must not pass LEDs that showed
    nothing."""

    def __init__(self, driver: LedDriver) -> None:
        self.pixels = driver.pixels
        self._driver = driver
        self.failed: Exception | None = None

    def show(self, frame: Frame) -> None:
        try:
            self._driver.show(frame)
        except Exception as exc:
            self.failed = self.failed or exc
            raise

    def close(self) -> None:
        self._driver.close()


def _describe_leds(ctx: Context) -> str:
    leds = ctx.cfg.leds
    if leds.kind in ("single", "multi", "rgb"):
        return f"{leds.kind} LEDs on pins {', '.join(map(str, leds.pins))}"
    return f"{leds.kind} LEDs"


async def check_leds(ctx: Context) -> Result:
    """Light each light of a strip (or of several LEDs) alone in turn, then show each
    state's pattern, each for half a second, so the owner can see every one."""
    from device.hw.leds import LedAnimator, open_leds, walk_pixels

    if ctx.cfg.leds.kind == "none":
        return Result("leds", Status.SKIP, "no LEDs configured ([leds] kind = 'none')")
    try:
        driver = open_leds(ctx.cfg.leds)
    except Exception as exc:
        no_gpio = no_pin_driver(exc)
        fix = FIX_NO_GPIO.format(what='set [leds] kind = "none"') if no_gpio else FIX_PINS
        failure = f"cannot open {_describe_leds(ctx)}: {gpio_failure(exc)}"
        return Result("leds", Status.FAIL, failure, fix)
    watched = _Watched(driver)
    animator = LedAnimator(watched)
    states = [str(state) for state in State]
    strip = driver.pixels > 1  # a dead light or a wrong count shows as a gap in its walk
    walked = f" and lit each of its {driver.pixels} lights alone in turn" if strip else ""
    try:
        if strip:
            async with ctx.progress.step("leds: lighting each light in turn (watch them)"):
                await walk_pixels(watched, seconds=LED_STEP_S)
        async with ctx.progress.step("leds: showing every state (watch them)") as update:
            for state in states:
                update(f"leds: showing {state} (watch them)")
                await animator.show(state)
                await asyncio.sleep(LED_STEP_S)
    except Exception:
        if watched.failed is None:
            raise
    finally:
        await animator.aclose()
    if (failed := watched.failed) is not None:
        measured = f"{_describe_leds(ctx)} opened, but failed to show: {gpio_failure(failed)}"
        return Result("leds", Status.FAIL, measured, FIX_SHOWING)
    return Result(
        "leds",
        Status.PASS,
        f"showed {', '.join(states)} for {LED_STEP_S:g} s each on {_describe_leds(ctx)}{walked}",
        data={"states": states},
    )


#: Why the doctor did not wait for a press.
NOT_WAITING = (
    "not waiting for a press (--no-button, or not run from a terminal; live-appliance "
    "doctor button always waits)"
)


async def check_button(ctx: Context) -> Result:
    """Wait for one press: it proves the pin, the wiring and the pull-up together. Not
    waiting (nobody at a terminal), the pin is still opened and read: one that cannot be
    opened, or reads pressed, needs nobody to be seen."""
    from device.hw.button import PRESSED, ButtonInput

    pin = ctx.cfg.button.pin
    wait_s = ctx.options.button_wait_s
    pressed = asyncio.Event()

    def on_edge(event: str, _t: float) -> None:
        if event == PRESSED:
            pressed.set()

    button = ButtonInput(
        pin,
        on_edge,
        hold_time=None,
        bounce_time=ctx.cfg.button.bounce_ms / 1000 or None,
        active_high=ctx.cfg.button.active_high,
    )
    try:
        button.start()
    except Exception as exc:
        measured = f"cannot open GPIO {pin}: {gpio_failure(exc)}"
        fix = "Check [button] pin (a BCM number) and that no other program uses it."
        if no_pin_driver(exc):
            if not ctx.options.button:  # a machine without GPIO, and no setting says so
                return Result("button", Status.SKIP, f"{measured}; {NOT_WAITING}")
            fix = FIX_NO_GPIO.format(what="the box answers `live-appliance ctl press` only")
        return Result("button", Status.FAIL, measured, fix)
    started = time.monotonic()
    try:
        if button.is_pressed:
            return Result(
                "button",
                Status.WARN,
                f"GPIO {pin} reads pressed before anyone pressed it",
                fix_held(ctx.cfg.button),
            )
        if not ctx.options.button:
            return Result(
                "button",
                Status.SKIP,
                f"GPIO {pin} opens and reads released; {NOT_WAITING}",
            )
        async with ctx.progress.step(f"button: press it now (waiting {wait_s:g} s)"):
            async with asyncio.timeout(wait_s):
                await pressed.wait()
    except TimeoutError:
        wiring = (
            f"the module's output on GPIO {pin}, its VCC on 3.3 V (never 5 V); or set [button] "
            "active_high = false for a plain button"
            if ctx.cfg.button.active_high
            else f"one leg of the button on GPIO {pin}, the other on ground"
        )
        return Result(
            "button",
            Status.FAIL,
            f"no press on GPIO {pin} in {wait_s:g} s",
            f"Check the wiring: {wiring}; or set [button] pin.",
        )
    finally:
        button.stop()
    waited = time.monotonic() - started
    return Result(
        "button",
        Status.PASS,
        f"press seen on GPIO {pin} after {waited:.1f} s",
        data={"pin": pin, "waited_s": round(waited, 2)},
    )
