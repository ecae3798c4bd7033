"""LED patterns, the animator and the gpiozero drivers (on MockFactory pins)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from itertools import pairwise
from typing import Any, ClassVar

import pytest
from gpiozero.pins.mock import MockPin
from helpers import FAST_PATTERNS, LED_SPEEDUP, fast_animator, mock_pins, until

from device.config import LedsConfig
from device.hw.apa102 import GpioTransport, encode, open_apa102
from device.hw.led_patterns import AMBER, PATTERNS, Pattern, Step, scaled
from device.hw.leds import (
    LedAnimator,
    NullLeds,
    OnePixel,
    make_leds,
    open_leds,
    walk_pixels,
)
from device.states import State

STATES = tuple(str(s) for s in State)


class Recorder(OnePixel):
    """A one-LED driver that remembers every colour it was given, with the time."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, tuple[float, float, float]]] = []
        self.closed = False

    def set(self, r: float, g: float, b: float) -> None:
        self.frames.append((time.monotonic(), (r, g, b)))

    def close(self) -> None:
        self.closed = True

    def colours(self, since: float = 0.0) -> list[tuple[float, float, float]]:
        return [rgb for t, rgb in self.frames if t >= since]


def brightness(rgb: tuple[float, float, float]) -> float:
    return max(rgb)


def flashes(levels: list[float]) -> int:
    """Rising edges through half brightness."""
    lit = [level >= 0.5 for level in levels]
    return sum(1 for before, now in pairwise(lit) if now and not before)


# --- the table, as data -------------------------------------------------------


def test_every_state_has_a_pattern() -> None:
    assert set(PATTERNS) == set(STATES)


def test_static_states_hold_one_level() -> None:
    assert PATTERNS["idle"].is_static and PATTERNS["idle"].steps[0].level == 0.0
    assert PATTERNS["listening"].is_static and PATTERNS["listening"].steps[0].level == 1.0


def test_blinks_toggle_fully_and_connecting_is_faster_than_thinking() -> None:
    for state in ("connecting", "thinking"):
        levels = [level for level, _ in PATTERNS[state].levels(25)]
        assert levels == [1.0, 0.0]
    assert PATTERNS["connecting"].cycle_seconds < PATTERNS["thinking"].cycle_seconds / 2


def test_error_flashes_exactly_twice_per_cycle() -> None:
    levels = [level for level, _ in PATTERNS["error"].levels(25)]
    # Prepend the cycle's last level: the first flash rises from it.
    assert flashes([levels[-1], *levels]) == 2


def test_speaking_breathes_smoothly_and_never_goes_dark() -> None:
    frames = PATTERNS["speaking"].levels(25)
    levels = [level for level, _ in frames]
    assert len(set(levels)) > 20
    assert min(levels) > 0.0 and max(levels) == 1.0
    steps = [abs(a - b) for a, b in zip(levels, [levels[-1], *levels[:-1]], strict=True)]
    assert max(steps) < 0.1  # no jumps, including where the cycle wraps
    assert sum(seconds for _, seconds in frames) == pytest.approx(1.2)


def test_states_look_different_on_a_single_led() -> None:
    signatures = {
        tuple((round(level * brightness(p.colour), 3), round(s, 3)) for level, s in p.levels(25))
        for p in PATTERNS.values()
    }
    assert len(signatures) == len(PATTERNS)


def test_states_have_distinct_colours_on_an_rgb_led() -> None:
    lit = [p.colour for state, p in PATTERNS.items() if state != "idle"]
    assert len(set(lit)) == len(lit)


def test_patterns_reject_a_cycle_that_would_spin() -> None:
    with pytest.raises(ValueError, match="seconds > 0"):
        Pattern((1.0, 0.0, 0.0), (Step(1.0, 0.2), Step(0.0, 0.0)))
    with pytest.raises(ValueError):
        Step(1.5)
    with pytest.raises(ValueError):
        Pattern((2.0, 0.0, 0.0), (Step(1.0),))


def test_one_led_frames_are_the_level_curve_in_colour() -> None:
    pattern = PATTERNS["speaking"]
    assert pattern.frames(25) == tuple(
        ((scaled(pattern.colour, level),), seconds) for level, seconds in pattern.levels(25)
    )


def test_on_a_strip_every_pixel_follows_the_curve_unless_the_pattern_chases() -> None:
    for state, pattern in PATTERNS.items():
        if pattern.chase:
            continue
        one = pattern.frames(25)
        strip = pattern.frames(25, 12)
        assert [seconds for _, seconds in strip] == [seconds for _, seconds in one], state
        assert [frame for frame, _ in strip] == [frame * 12 for frame, _ in one], state


def test_thinking_spins_a_head_and_tail_once_per_cycle_on_any_strip() -> None:
    thinking = PATTERNS["thinking"]
    full, mid, low, off = AMBER, scaled(AMBER, 0.4), scaled(AMBER, 0.1), (0.0, 0.0, 0.0)
    assert [frame for frame, _ in thinking.frames(25, 3)] == [
        (full, low, mid),
        (mid, full, low),
        (low, mid, full),
    ]
    assert [frame for frame, _ in thinking.frames(25, 2)] == [(full, mid), (mid, full)]
    ring = thinking.frames(25, 12)
    assert len(ring) == 12
    assert sum(seconds for _, seconds in ring) == pytest.approx(thinking.cycle_seconds)
    assert ring[5][0] == (off,) * 3 + (low, mid, full) + (off,) * 6
    # One LED cannot spin: it keeps the slow blink.
    assert [frame for frame, _ in thinking.frames(25)] == [(full,), (off,)]


def test_patterns_reject_a_chase_they_cannot_play() -> None:
    with pytest.raises(ValueError, match="chase needs a cycle"):
        Pattern(AMBER, (Step(1.0),), chase=(1.0,))
    with pytest.raises(ValueError, match="chase levels"):
        Pattern(AMBER, (Step(1.0, 0.1), Step(0.0, 0.1)), chase=(1.5,))
    with pytest.raises(ValueError, match="at least one pixel"):
        PATTERNS["idle"].frames(25, 0)


# --- the animator, on a recording driver --------------------------------------

def test_the_fast_table_has_the_same_frames_at_the_faster_pace() -> None:
    for state, pattern in PATTERNS.items():
        for pixels in (1, 3):
            fast = FAST_PATTERNS[state].frames(25 * LED_SPEEDUP, pixels)
            real = pattern.frames(25, pixels)
            assert [frame for frame, _ in fast] == [frame for frame, _ in real], state
            assert [s for _, s in fast] == pytest.approx([s / LED_SPEEDUP for _, s in real]), state


async def watch(state: str, frames: int) -> Recorder:
    """Show `state` until the driver has had `frames` frames, then close."""
    driver = Recorder()
    leds = fast_animator(driver)
    await leds.show(state)
    await until(lambda: len(driver.frames) >= frames)
    await leds.aclose()
    return driver


async def test_listening_is_set_once_at_full_blue() -> None:
    driver = await watch("listening", 1)
    await asyncio.sleep(0.05)  # a static pattern plays nothing more
    assert driver.colours() == [(0.0, 0.0, 1.0), (0.0, 0.0, 0.0)]  # then aclose's off


async def test_idle_is_off() -> None:
    driver = await watch("idle", 1)
    assert all(brightness(rgb) == 0.0 for rgb in driver.colours())


async def test_thinking_toggles_on_and_off() -> None:
    driver = await watch("thinking", 3)
    levels = [brightness(rgb) for rgb in driver.colours()]
    assert levels[:3] == [1.0, 0.0, 1.0]
    assert driver.colours()[0] == (1.0, 0.5, 0.0)


async def test_error_plays_two_flashes_per_cycle() -> None:
    steps = len(PATTERNS["error"].steps)
    driver = await watch("error", 2 * steps)
    levels = [brightness(rgb) for rgb in driver.colours()]
    assert flashes([0.0, *levels[:steps]]) == 2
    assert flashes(levels[steps - 1 : 2 * steps]) == 2  # and again in the next cycle
    assert set(driver.colours()[:-1]) == {(1.0, 0.0, 0.0), (0.0, 0.0, 0.0)}


async def test_speaking_fades_in_small_steps() -> None:
    driver = await watch("speaking", 8)
    greens = [rgb[1] for rgb in driver.colours()[:8]]
    assert len(set(greens)) == 8
    assert greens == sorted(greens)  # rising from the low point towards full
    assert all(rgb[0] == rgb[2] == 0.0 for rgb in driver.colours())


async def test_a_state_change_leaves_no_frame_of_the_old_pattern() -> None:
    driver = Recorder()
    leds = fast_animator(driver)
    await leds.show("connecting")
    await asyncio.sleep(0.04)
    switched = time.monotonic()
    await leds.show("listening")
    await asyncio.sleep(0.05)  # a few connecting blinks: a live old task would show
    assert driver.colours(since=switched) == [(0.0, 0.0, 1.0)]
    assert leds.state == "listening"
    await leds.aclose()


async def test_history_records_changes_in_order() -> None:
    leds = LedAnimator(Recorder())
    for state in ("connecting", "listening", "listening", "thinking", "speaking", "idle"):
        await leds.show(state)
    assert [state for _, state in leds.history] == [
        "connecting",
        "listening",
        "thinking",
        "speaking",
        "idle",
    ]
    times = [t for t, _ in leds.history]
    assert times == sorted(times)
    await leds.aclose()


async def test_the_history_has_the_new_state_while_the_old_pattern_stops() -> None:
    """`ctl status` is answered on the same loop: it must not see a new state beside
    the old state's LEDs while the old animation is being stopped."""
    leds = LedAnimator(Recorder())
    await leds.show("thinking")  # animated: a task to stop at the next change
    changing = asyncio.create_task(leds.show("idle"))
    await asyncio.sleep(0)  # one turn of the loop: the change is under way
    assert leds.history[-1][1] == "idle" and leds.state == "idle"
    await changing
    await leds.aclose()


async def test_aclose_stops_the_task_and_turns_off() -> None:
    driver = Recorder()
    leds = fast_animator(driver)
    await leds.show("speaking")
    await asyncio.sleep(0.02)
    await leds.aclose()
    closed_at = len(driver.frames)
    await asyncio.sleep(0.05)  # a dozen fade steps
    assert len(driver.frames) == closed_at  # nothing plays after close
    assert driver.colours()[-1] == (0.0, 0.0, 0.0)
    assert driver.closed and leds.state is None
    await leds.aclose()  # a second close is harmless


class Strip:
    """A driver of several pixels that remembers every frame it was given."""

    def __init__(self, pixels: int) -> None:
        self.pixels = pixels
        self.frames: list[tuple[tuple[float, float, float], ...]] = []
        self.closed = False

    def show(self, frame: tuple[tuple[float, float, float], ...]) -> None:
        self.frames.append(frame)

    def close(self) -> None:
        self.closed = True


async def test_a_strip_gets_whole_frames_and_ends_dark() -> None:
    strip = Strip(3)
    leds = fast_animator(strip)
    await leds.show("thinking")
    await until(lambda: len(strip.frames) >= 4)
    await leds.aclose()
    chase = [frame for frame, _ in PATTERNS["thinking"].frames(25, 3)]
    assert strip.frames[:4] == [*chase, chase[0]]  # round and round
    assert strip.frames[-1] == ((0.0, 0.0, 0.0),) * 3
    assert strip.closed


async def test_walk_lights_each_pixel_alone_then_none() -> None:
    blue, off = (0.0, 0.0, 1.0), (0.0, 0.0, 0.0)
    strip = Strip(3)
    await walk_pixels(strip, colour=blue, seconds=0)
    assert strip.frames == [(blue, off, off), (off, blue, off), (off, off, blue), (off,) * 3]
    one = Recorder()
    await walk_pixels(one, colour=blue, seconds=0)
    assert one.colours() == [blue, off]


async def test_unknown_state_is_refused() -> None:
    leds = LedAnimator(NullLeds())
    with pytest.raises(ValueError, match="no LED pattern"):
        await leds.show("dancing")


async def test_a_failing_driver_does_not_raise_into_the_caller() -> None:
    class Broken(Recorder):
        failed = False

        def set(self, r: float, g: float, b: float) -> None:
            if self.frames:
                self.failed = True
                raise OSError("pin gone")
            super().set(r, g, b)

    driver = Broken()
    leds = fast_animator(driver)
    await leds.show("connecting")
    await until(lambda: driver.failed)  # the animation stops at its second frame
    await leds.show("listening")  # the dead animation is reaped, the error only logged
    assert leds.state == "listening"
    assert len(driver.frames) == 1


async def test_a_driver_that_fails_to_close_does_not_stop_shutdown(caplog) -> None:
    class Stuck(Recorder):
        def close(self) -> None:
            raise OSError("bus gone")

    driver = Stuck()
    leds = LedAnimator(driver)
    await leds.show("listening")
    await leds.aclose()  # logged, not raised
    assert driver.colours()[-1] == (0.0, 0.0, 0.0)
    assert "LEDs failed to close" in caplog.text


# --- real gpiozero devices on mock pins ---------------------------------------


@pytest.fixture
def pins():
    from gpiozero.pins.mock import MockPWMPin

    with mock_pins(MockPWMPin) as factory:
        yield factory.pin


@pytest.fixture
def onoff_pins():
    from gpiozero.pins.mock import MockPin

    with mock_pins(MockPin) as factory:
        yield factory.pin


def states(pins, *numbers: int) -> tuple[float, ...]:
    return tuple(float(pins(n).state) for n in numbers)


def test_single_led_shows_the_brightest_channel(pins) -> None:
    led = make_leds("single", [17])
    led.set(0.2, 0.6, 0.0)
    assert states(pins, 17) == (0.6,)
    led.close()


def test_channel_leds_each_follow_their_channel(pins) -> None:
    leds = make_leds("multi", {"red": 5, "blue": 6})
    leds.set(1.0, 0.5, 0.25)
    assert states(pins, 5, 6) == (1.0, 0.25)
    leds.close()
    in_order = make_leds("multi", [5, 6, 13])
    in_order.set(0.1, 0.2, 0.3)
    assert states(pins, 5, 6, 13) == (0.1, 0.2, 0.3)
    in_order.close()


def test_rgb_led_common_anode_inverts_pins(pins) -> None:
    led = make_leds("rgb", [22, 23, 24], active_high=False)
    led.set(1.0, 0.0, 0.25)
    assert states(pins, 22, 23, 24) == (0.0, 1.0, 0.75)
    led.close()


def test_without_pwm_levels_become_on_or_off(onoff_pins) -> None:
    for kind, pins in (("rgb", [2, 3, 4]), ("multi", [2, 3, 4]), ("single", [5])):
        leds = make_leds(kind, pins, pwm=False)
        leds.set(1.0, 0.5, 0.2)
        assert states(onoff_pins, *pins) == ((1.0, 1.0, 0.0) if len(pins) == 3 else (1.0,))
        leds.set(0.0, 0.4, 0.0)
        assert states(onoff_pins, *pins) == ((0.0, 0.0, 0.0) if len(pins) == 3 else (0.0,))
        leds.close()


def test_bad_led_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown LED kind"):
        make_leds("lava-lamp", [1])
    with pytest.raises(ValueError, match="one pin"):
        make_leds("single", [1, 2])
    with pytest.raises(ValueError, match="three pins"):
        make_leds("rgb", [1, 2])
    with pytest.raises(ValueError, match="at most three"):
        make_leds("multi", [1, 2, 3, 4])
    with pytest.raises(ValueError, match="channel LEDs"):
        make_leds("multi", {"purple": 1})
    assert isinstance(make_leds("none"), NullLeds)


async def test_animator_drives_real_mock_pins_and_leaves_them_off(pins) -> None:
    animator = fast_animator(make_leds("rgb", [22, 23, 24]))
    await animator.show("listening")
    assert states(pins, 22, 23, 24) == (0.0, 0.0, 1.0)
    await animator.show("thinking")
    await until(lambda: len(pins(22).states) >= 3)
    assert [s.state for s in pins(22).states] == [0.0, 1.0, 0.0]  # amber on, then off
    assert [s.state for s in pins(23).states] == [0.0, 0.5, 0.0]
    await animator.show("error")
    await until(lambda: pins(22).state == 1.0)  # mid-flash
    await animator.aclose()
    assert states(pins, 22, 23, 24) == (0.0, 0.0, 0.0)


async def test_single_led_animator_blinks_the_pin(pins) -> None:
    animator = fast_animator(make_leds("single", [17]))
    await animator.show("connecting")
    await until(lambda: [s.state for s in pins(17).states].count(1.0) >= 2)
    await animator.aclose()
    seen = [s.state for s in pins(17).states]
    assert seen[:4] == [0.0, 1.0, 0.0, 1.0] and seen[-1] == 0.0


def test_importing_hardware_modules_opens_nothing() -> None:
    code = (
        "import sys, device.hw.leds, device.hw.button, device.hw.led_patterns,"
        " device.hw.apa102, device.hw.profiles;"
        "assert 'gpiozero' not in sys.modules, 'gpiozero imported at import time';"
        "assert 'spidev' not in sys.modules, 'spidev imported at import time'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("kind", "pins", "lit"),
    [("rgb", [5, 6, 13], (1.0, 1.0, 0.0)), ("multi", [5, 6], (1.0, 1.0)), ("single", [5], (1.0,))],
)
def test_pins_that_cannot_fade_show_the_patterns_on_and_off(onoff_pins, caplog, kind, pins, lit):
    """A pin factory without PWM (gpiozero raises PinPWMUnsupported): one journal line."""
    leds = open_leds(LedsConfig(kind=kind, pins=tuple(pins)))
    leds.show(((1.0, 1.0, 0.2),))
    assert states(onoff_pins, *pins) == lit
    leds.close()
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def _pin_levels(factory, pins):
    return tuple(round(float(factory.pin(n).state), 2) for n in pins)


@pytest.mark.parametrize("pins", [[5], [5, 6]])
def test_multi_leds_with_some_channels_show_every_state(pins) -> None:
    """A colour none of the LEDs has (blue on a red and a green LED) is not dark."""
    from gpiozero.pins.mock import MockPWMPin

    with mock_pins(MockPWMPin) as factory:
        leds = make_leds("multi", pins)
        seen = {}
        for state, pattern in PATTERNS.items():
            colour = pattern.colour
            leds.set(*colour)  # the pattern at full level
            seen[state] = _pin_levels(factory, pins)
        leds.close()
    dark = tuple(0.0 for _ in pins)
    invisible = sorted(s for s, lv in seen.items() if s != "idle" and lv == dark)
    assert not invisible, f"multi {pins}: {invisible} look exactly like idle (all off)"


class Hiccup:
    """One LED that fails the frames numbered in `fail` (0-based) once each, as a pin
    write or an SPI transfer may when the bus is busy, and keeps the last frame shown."""

    pixels = 1

    def __init__(self, *fail: int) -> None:
        self.fail = set(fail)
        self.tries = 0
        self.shown: tuple[float, float, float] | None = None
        self.closed = False

    def show(self, frame: tuple[tuple[float, float, float], ...]) -> None:
        self.tries += 1
        if self.tries - 1 in self.fail:
            raise OSError("Remote I/O error")
        (self.shown,) = frame

    def close(self) -> None:
        self.closed = True


DARK = (0.0, 0.0, 0.0)


async def test_leds_that_fail_once_as_the_box_goes_idle_do_not_stay_lit() -> None:
    """A driver that fails one frame (the idle one) once: the LEDs still go dark soon
    after. They stayed blue, "listening", for as long as the box then sat idle."""
    driver = Hiccup(1)
    leds = LedAnimator(driver)
    await leds.show("listening")
    assert driver.shown == (0.0, 0.0, 1.0)
    await leds.show("idle")  # this frame fails
    await until(lambda: driver.shown == DARK, within=3)
    await leds.aclose()


async def test_leds_that_fail_once_at_the_stop_still_end_dark() -> None:
    """SIGTERM while listening, and the dark frame fails once: the LEDs end off all the
    same; they stayed lit after the daemon had gone."""
    driver = Hiccup(1)
    leds = LedAnimator(driver)
    await leds.show("listening")
    await leds.aclose()
    assert driver.shown == DARK and driver.closed


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
def wired_pins() -> Iterator[Any]:
    WiredPin.failing, WiredPin.bits = 0, []
    with mock_pins(WiredPin) as factory:
        yield factory


def last_update(pixels: int) -> bytes:
    """The last whole update the pixels were sent, as bytes."""
    size = len(encode(((0.0, 0.0, 0.0),) * pixels))
    bits = WiredPin.bits[-size * 8 :]
    return bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))


async def test_pixels_whose_pins_fail_once_show_the_next_state_all_the_same(
    wired_pins: Any, caplog: pytest.LogCaptureFixture
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
