"""APA102 pixels: the bytes on the SPI bus (a fake spidev) and on bit-banged mock pins."""

from __future__ import annotations

import asyncio
import errno
import sys
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from gpiozero import DigitalOutputDevice
from gpiozero.pins.mock import MockPin
from helpers import fast_animator, mock_pins, until

from device.config import LedsConfig
from device.errors import LedsUnavailable
from device.hw.apa102 import Apa102, brightness_field, encode
from device.hw.led_patterns import BLUE, RED, Pattern, Step, dark
from device.hw.leds import LedAnimator, open_leds
from device.states import State

START = bytes(4)
LATCH = bytes(4)


def pixel(r: int, g: int, b: int, brightness: int = 31) -> bytes:
    """One pixel as the datasheet lays it out: 0b111 + brightness, then blue, green, red."""
    return bytes((0b1110_0000 | brightness, b, g, r))


def update(*pixels: bytes) -> bytes:
    """A whole update of up to 16 pixels: start, pixels, latch, one byte of end clocks."""
    return START + b"".join(pixels) + LATCH + bytes(1)


BLACK3 = update(*[pixel(0, 0, 0)] * 3)


@dataclass
class FakeBus:
    """What the fake spidev module saw: devices opened and every byte written."""

    present: set[tuple[int, int]] = field(default_factory=lambda: {(0, 0), (0, 1)})
    denied: bool = False
    devices: list[FakeSpiDev] = field(default_factory=list)

    @property
    def writes(self) -> list[bytes]:
        return [data for device in self.devices for data in device.writes]


class FakeSpiDev:
    """spidev.SpiDev as far as the driver uses it; refuses a write before open or after close."""

    def __init__(self, bus: FakeBus) -> None:
        self._bus = bus
        self.opened: tuple[int, int] | None = None
        self.closed = False
        self.max_speed_hz = 500_000
        self.mode = 0
        self.writes: list[bytes] = []
        bus.devices.append(self)

    def open(self, bus: int, device: int) -> None:
        if self._bus.denied:
            raise PermissionError(errno.EACCES, "Permission denied")
        if (bus, device) not in self._bus.present:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        self.opened = (bus, device)

    def writebytes2(self, data: bytes) -> None:
        assert self.opened is not None and not self.closed, "write on a closed SPI device"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def bus(monkeypatch: pytest.MonkeyPatch) -> FakeBus:
    """A fake spidev module in sys.modules, where the driver's `import spidev` finds it."""
    fake = FakeBus()
    module = types.ModuleType("spidev")
    module.SpiDev = lambda: FakeSpiDev(fake)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "spidev", module)
    return fake


def hat(**settings: object) -> LedsConfig:
    """The ReSpeaker 2-Mic's pixels (3 on SPI 0.1), full brightness unless told."""
    values: dict[str, object] = {"kind": "apa102", "count": 3, "spi_bus": 0, "spi_device": 1}
    return LedsConfig(**{**values, **settings})  # type: ignore[arg-type]


# --- the wire format ----------------------------------------------------------


def test_an_update_is_start_pixels_in_bgr_then_zero_clocks() -> None:
    frame = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 0.5))
    assert encode(frame) == bytes.fromhex(
        "00000000" "ff0000ff" "ff00ff00" "ff800000" "00000000" "00"
    )  # fmt: skip


@pytest.mark.parametrize(("count", "end_bytes"), [(1, 1), (12, 1), (16, 1), (17, 2), (64, 4)])
def test_the_end_clocks_cover_half_a_bit_per_pixel(count: int, end_bytes: int) -> None:
    data = encode(dark(count))
    assert len(data) == 4 + 4 * count + 4 + end_bytes
    assert data[-(4 + end_bytes) :] == bytes(4 + end_bytes)
    assert end_bytes * 8 >= count / 2


def test_brightness_is_the_five_bit_global_field() -> None:
    assert [brightness_field(b) for b in (1.0, 0.5, 0.25, 0.01, 0.0)] == [31, 16, 8, 1, 0]
    assert encode(((1.0, 1.0, 1.0),), 8)[4] == 0b1110_1000
    with pytest.raises(ValueError):
        brightness_field(1.5)
    with pytest.raises(ValueError):
        encode(((1.0, 1.0, 1.0),), 32)


# --- the SPI driver under the animator ----------------------------------------

AMBER_FULL, AMBER_MID, AMBER_LOW = pixel(255, 128, 0), pixel(102, 51, 0), pixel(26, 13, 0)
EXPECTED = {
    "idle": [BLACK3],
    "listening": [update(*[pixel(0, 0, 255)] * 3)],
    "connecting": [update(*[pixel(255, 255, 255)] * 3), BLACK3],
    "thinking": [
        update(AMBER_FULL, AMBER_LOW, AMBER_MID),
        update(AMBER_MID, AMBER_FULL, AMBER_LOW),
        update(AMBER_LOW, AMBER_MID, AMBER_FULL),
    ],
    "error": [update(*[pixel(255, 0, 0)] * 3), BLACK3, update(*[pixel(255, 0, 0)] * 3), BLACK3],
}


def test_every_state_but_speaking_has_exact_frames_here() -> None:
    assert set(EXPECTED) == {str(s) for s in State} - {"speaking"}  # speaking: the test after


@pytest.mark.parametrize("state", sorted(EXPECTED))
async def test_each_state_sends_its_frames_and_closing_sends_black(
    bus: FakeBus, state: str
) -> None:
    leds = fast_animator(open_leds(hat()))
    await leds.show(state)
    await until(lambda: len(bus.writes) >= len(EXPECTED[state]))
    await leds.aclose()
    assert bus.writes[: len(EXPECTED[state])] == EXPECTED[state]
    assert bus.writes[-1] == BLACK3
    (device,) = bus.devices
    assert device.opened == (0, 1) and device.closed
    assert device.max_speed_hz == 8_000_000 and device.mode == 0


async def test_speaking_breathes_green_on_every_pixel_alike(bus: FakeBus) -> None:
    leds = fast_animator(open_leds(hat()))
    await leds.show("speaking")
    await until(lambda: len(bus.writes) >= 8)
    await leds.aclose()
    greens = []
    for data in bus.writes[:8]:
        pixels = {data[i : i + 4] for i in range(4, 16, 4)}
        assert len(pixels) == 1  # all three alike
        ((head, blue, green, red),) = pixels
        assert (head, blue, red) == (0xFF, 0, 0)
        greens.append(green)
    assert greens == sorted(greens) and len(set(greens)) == 8  # rising from the low point
    assert greens[0] > round(0.15 * 255)  # never dark


async def test_brightness_from_the_config_reaches_every_pixel(bus: FakeBus) -> None:
    leds = LedAnimator(open_leds(hat(brightness=0.25)))
    await leds.show("listening")
    await leds.aclose()
    assert bus.writes == [update(*[pixel(0, 0, 255, 8)] * 3), update(*[pixel(0, 0, 0, 8)] * 3)]


async def test_a_state_change_leaves_no_frame_of_the_old_animation(bus: FakeBus) -> None:
    # Fast patterns: waiting for 30 frames of the new one gives a leftover task
    # of the old one some fifteen chances to write.
    patterns = {
        "old": Pattern(RED, (Step(1.0, 0.005), Step(0.0, 0.005)), chase=(1.0,)),
        "new": Pattern(BLUE, (Step(1.0, 0.005), Step(0.5, 0.005))),
    }
    leds = LedAnimator(open_leds(hat()), patterns)
    await leds.show("old")
    await until(lambda: len(bus.writes) >= 5)
    switched = len(bus.writes)
    await leds.show("new")
    await until(lambda: len(bus.writes) >= switched + 30)
    await leds.aclose()
    new = {update(*[pixel(0, 0, 255)] * 3), update(*[pixel(0, 0, 128)] * 3)}
    assert set(bus.writes[switched:-1]) == new
    assert bus.writes[-1] == BLACK3


def test_a_frame_of_the_wrong_length_is_refused(bus: FakeBus) -> None:
    pixels = open_leds(hat())
    with pytest.raises(ValueError, match="3 pixels"):
        pixels.show(dark(2))
    pixels.close()


# --- what the owner sees when SPI is missing ----------------------------------


def test_a_missing_spi_device_names_the_overlay_and_the_device(bus: FakeBus) -> None:
    bus.present.clear()
    with pytest.raises(LedsUnavailable) as caught:
        open_leds(hat())
    message = str(caught.value)
    assert "dtparam=spi=on" in message and "/boot/firmware/config.txt" in message
    assert "/dev/spidev0.1" in message and "bus 0" in message and "chip select 1" in message


def test_spi_without_permission_says_which_group(bus: FakeBus) -> None:
    bus.denied = True
    with pytest.raises(LedsUnavailable, match="'spi' group"):
        open_leds(hat())


def test_without_spidev_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "spidev", None)  # import spidev now fails
    with pytest.raises(LedsUnavailable, match="apt install python3-spidev"):
        open_leds(hat())


# --- power-enable pin and bit-banged pixels, on gpiozero mock pins ------------


@pytest.fixture
def pins() -> Iterator:
    with mock_pins(MockPin) as factory:
        yield factory.pin


async def test_the_power_pin_is_on_while_open_and_off_after(bus: FakeBus, pins) -> None:
    leds = LedAnimator(open_leds(hat(count=12, power_pin=5)))
    assert pins(5).state is True
    await leds.show("listening")
    await leds.aclose()
    assert pins(5).state is False
    assert bus.writes[-1] == update(*[pixel(0, 0, 0)] * 12)


class ShiftClock(MockPin):
    """A clock pin that shifts in the data pin's level on each rising edge, as a pixel does."""

    def __init__(self, factory, info, data_pin: MockPin) -> None:
        super().__init__(factory, info)
        self.data_pin = data_pin
        self.bits: list[int] = []

    def _set_state(self, value) -> None:
        rising = bool(value) and not self._state
        super()._set_state(value)
        if rising:
            self.bits.append(int(self.data_pin.state))

    def received(self) -> bytes:
        return bytes(
            int("".join(map(str, self.bits[i : i + 8])), 2) for i in range(0, len(self.bits), 8)
        )


async def test_bit_banged_pixels_get_the_same_bytes_msb_first(
    pins, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "spidev", None)  # the GPIO path must not need spidev
    clock = pins(6, pin_class=ShiftClock, data_pin=pins(5))
    leds = LedAnimator(open_leds(hat(data_pin=5, clock_pin=6)))
    listening = update(*[pixel(0, 0, 255)] * 3)
    await leds.show("listening")
    await until(lambda: clock.received() == listening)  # the pins' thread clocks it out
    await leds.show("idle")
    await until(lambda: clock.received() == listening + BLACK3)
    await leds.aclose()
    assert clock.received() == listening + BLACK3 + BLACK3  # idle, then aclose's off
    assert pins(6).state is False  # the clock idles low


class HeldClock(ShiftClock):
    """A clock pin whose writes wait until `moving` is set: pins slower than anything."""

    moving = threading.Event()
    held = threading.Event()  # a write is waiting

    def _set_state(self, value) -> None:
        self.held.set()
        self.moving.wait()
        super()._set_state(value)


def test_bit_banged_pixels_are_clocked_out_off_the_callers_thread(
    pins, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frame took hundreds of pin writes on the event loop (the animator shows 25 a
    second): show() hands it over and returns; close() still turns the pixels off."""
    monkeypatch.setitem(sys.modules, "spidev", None)
    HeldClock.moving.set()  # opening sets the pins
    clock = pins(6, pin_class=HeldClock, data_pin=pins(5))
    pixels = open_leds(hat(data_pin=5, clock_pin=6))
    HeldClock.moving.clear()
    HeldClock.held.clear()
    failsafe = threading.Timer(5, HeldClock.moving.set)  # a show() that blocks ends, to fail
    failsafe.start()
    try:
        pixels.show(((0.0, 0.0, 1.0),) * 3)
        returned_first = not HeldClock.moving.is_set()
        assert HeldClock.held.wait(5), "the frame never reached the pins"
        HeldClock.moving.set()
        pixels.close()
    finally:
        failsafe.cancel()
        HeldClock.moving.set()
    assert returned_first, "show() waited for the pins"
    assert clock.received() == update(*[pixel(0, 0, 255)] * 3) + BLACK3


class SlowClock(ShiftClock):
    """Pins as slow as a long strip's on a Pi: a frame takes longer than the animation's
    step, so frames wait for the pins."""

    def _set_state(self, value) -> None:
        time.sleep(0.001)
        super()._set_state(value)


async def test_a_stop_turns_slow_bit_banged_pixels_off_and_then_releases_their_pins(
    pins, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The frames still waiting were clocked out before the dark one, past the close's
    wait: the pins were closed under the writer (a traceback) and the pixels stayed lit."""
    errors: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))
    monkeypatch.setitem(sys.modules, "spidev", None)
    clock = pins(6, pin_class=SlowClock, data_pin=pins(5))
    leds = LedAnimator(open_leds(hat(data_pin=5, clock_pin=6)))
    await leds.show("speaking")  # 25 frames a second, each about 0.4 s on these pins
    await asyncio.sleep(0.5)
    await leds.aclose()
    assert clock.received().endswith(BLACK3) and errors == []
    for pin in (5, 6):  # released: another device may have them (GPIOPinInUse else)
        DigitalOutputDevice(pin).close()


def test_closing_pixels_directly_also_turns_them_off(bus: FakeBus) -> None:
    pixels = open_leds(hat())
    assert isinstance(pixels, Apa102)
    pixels.show(((1.0, 1.0, 1.0),) * 3)
    pixels.close()
    assert bus.writes[-1] == BLACK3 and bus.devices[0].closed


def test_an_spi_device_that_refuses_its_settings_is_closed(
    bus: FakeBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An open /dev/spidev whose speed or mode cannot be set is closed again: py-spidev
    keeps a reference to every SpiDev it makes, so one left open is never collected."""

    def refuse(self: FakeSpiDev, name: str, value: object) -> None:
        if name == "max_speed_hz" and getattr(self, "opened", None) is not None:
            raise OSError(errno.EINVAL, "Invalid argument")
        object.__setattr__(self, name, value)

    monkeypatch.setattr(FakeSpiDev, "__setattr__", refuse)
    with pytest.raises(OSError, match="Invalid argument"):
        open_leds(hat())
    (device,) = bus.devices
    assert device.opened is not None and device.closed


# --- after a daemon that did not stop cleanly ---------------------------------------


def pixels_config(tmp_path: Path) -> Path:
    """The HAT's pixels, and a control socket (and so the daemon's lock) of the test's."""
    path = tmp_path / "config.toml"
    path.write_text('[leds]\nkind = "apa102"\ncount = 3\nspi_bus = 0\nspi_device = 1\n'
                    f'[control]\nsocket = "{tmp_path / "control.sock"}"\n')
    return path


@pytest.mark.parametrize("result", ["watchdog", "signal", "oom-kill", "exit-code"])
def test_leds_off_darkens_pixels_a_killed_daemon_left_lit(
    bus: FakeBus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, result: str
) -> None:
    """The unit's ExecStopPost. Pixels keep their last frame: a daemon the watchdog
    aborted (or the OOM killer took) left the box showing "listening" through the
    restart's wait, and the ten minutes after a fifth crash, while nothing listened."""
    from device import cli

    path = pixels_config(tmp_path)
    monkeypatch.setenv("SERVICE_RESULT", result)
    assert cli.main(["leds-off", "--config", str(path)]) == 0
    assert bus.writes == [BLACK3], "one dark frame, though this process lit nothing"
    assert bus.devices[0].closed


def test_leds_off_after_a_clean_stop_opens_nothing(
    bus: FakeBus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clean stop turned them off itself: the stop is not made longer on a Pi Zero."""
    from device import cli

    path = pixels_config(tmp_path)
    monkeypatch.setenv("SERVICE_RESULT", "success")
    assert cli.main(["leds-off", "--config", str(path)]) == 0
    assert bus.devices == []


def test_leds_off_with_pixels_it_cannot_open_says_why_in_one_line(
    bus: FakeBus,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from device import cli

    bus.present.clear()
    path = pixels_config(tmp_path)
    monkeypatch.setenv("SERVICE_RESULT", "signal")
    assert cli.main(["leds-off", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("live-appliance leds-off: ") and "/dev/spidev0.1" in err, err
    assert "Traceback" not in err


def test_leds_off_leaves_the_pixels_of_a_running_daemon_alone(
    bus: FakeBus,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """By hand beside the service: SPI opens twice, and its state was overwritten dark."""
    from device import cli
    from device.control import single_instance

    path = pixels_config(tmp_path)
    monkeypatch.delenv("SERVICE_RESULT", raising=False)
    with single_instance(tmp_path / "control.sock"):  # the daemon's lock, held
        assert cli.main(["leds-off", "--config", str(path)]) == 1
    assert bus.devices == []
    assert "already running" in capsys.readouterr().err
    assert cli.main(["leds-off", "--config", str(path)]) == 0
    assert bus.writes == [BLACK3]
