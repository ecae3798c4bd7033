"""The one GPIO button through the real ButtonInput on gpiozero's mock pins, alone and in
the real Appliance: a box on it, a button held at boot, a release gpiozero never reported."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fakes import CHUNK, QUIET, Box, FakeParts, config, running
from gpiozero.pins.mock import MockPin
from helpers import mock_pins, until
from test_doctor import context

from device import config as settings
from device.doctor.daemon import summary_lines
from device.doctor.gpio import check_button
from device.doctor.result import Options, Status
from device.doctor.runner import format_result, held_by_the_service
from device.hw.button import PRESSED, RELEASED, ButtonInput
from device.parts import Parts
from device.states import SetupComplete

PIN = 17


@dataclass
class PinParts(FakeParts):
    """Fake parts but the button: the real ButtonInput, on gpiozero's mock pins."""

    def button(self, on_edge):  # type: ignore[no-untyped-def]
        return self._keep("button", Parts.button(self, on_edge))


@pytest.fixture
def pins() -> Iterator[Any]:
    with mock_pins() as factory:
        yield factory


def kinds(box: Box) -> list[str]:
    return [item.kind for item in box.link.sent()]


def leds(box: Box) -> list[str]:
    assert box.appliance.leds is not None
    return [state for _, state in box.appliance.leds.history]


class LossyPin(MockPin):
    """A pin whose next edge gpiozero never reports (its software debounce read the contact
    mid-bounce, gpiozero#550: "presses but not releases"), or reports `late_s` late, with
    the edge's own time (its callback thread held up on a loaded Pi)."""

    lose_next = False
    late_s = 0.0

    def _call_when_changed(self) -> None:
        if LossyPin.lose_next:
            LossyPin.lose_next = False
            return
        if LossyPin.late_s:
            late, LossyPin.late_s = LossyPin.late_s, 0.0
            threading.Timer(late, super()._call_when_changed).start()
            return
        super()._call_when_changed()


async def speak_until(box: Box, condition: Callable[[], object], within: float) -> None:
    """The room talks (a chunk every 40 ms, as a card delivers them) until `condition()`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, f"not within {within} s: {box.states()}"
        box.mic.record(CHUNK)
        await asyncio.sleep(0.04)


@contextlib.asynccontextmanager
async def asking(tmp_path: Path) -> AsyncIterator[tuple[Box, Any]]:
    """A box on a LossyPin button, held down and talked to: a question open on the link."""
    LossyPin.lose_next, LossyPin.late_s = False, 0.0
    with mock_pins(LossyPin) as pins:
        async with running(tmp_path, parts_class=PinParts) as box:
            pin = pins.pin(PIN)
            pin.drive_low()
            await until(lambda: box.state == "connecting")
            box.link.deliver(SetupComplete)
            await speak_until(box, lambda: box.appliance.machine.spoke, within=2)
            yield box, pin


async def let_go(box: Box, pin: Any) -> None:
    """The person lets go: the question ends within the pin's reads, and is the only one."""
    pin.drive_high()
    await speak_until(box, lambda: not box.mic.forwarding, within=1.5)
    asked = kinds(box)
    assert asked.count("activity_start") == asked.count("activity_end") == 1


async def test_a_release_gpiozero_never_reported_ends_the_turn_within_a_second(
    tmp_path: Path,
) -> None:
    """The person lets go and the release is lost: without a look at the pin the
    microphone would stream the room on, LEDs listening, until 30 s after the last word
    (120 s with a TV on). The pin is read while the button is down."""
    async with asking(tmp_path) as (box, pin):
        LossyPin.lose_next = True
        await let_go(box, pin)  # gpiozero never says so
        assert box.state == "thinking" and leds(box)[-1] == "thinking"
        pin.drive_low()  # asks again: gpiozero, taking it for still down, is silent
        # The state shows first, the capture follows its LEDs (from the press's edge).
        await speak_until(box, lambda: box.state == "listening" and box.mic.forwarding, 1.5)
        assert leds(box)[-1] == "listening"
        await let_go(box, pin)  # and this release gpiozero reports
        assert box.state == "thinking"


async def test_a_release_gpiozero_reports_late_is_no_second_press(tmp_path: Path) -> None:
    """The person asks and lets go; gpiozero's release comes a second late, after the reads
    of the pin reported it. It was taken for a tap gpiozero reported only by its release: a
    press nobody made, the LEDs listening, the room sent as a new question and answered."""
    async with asking(tmp_path) as (box, pin):
        LossyPin.late_s = 1.2
        await let_go(box, pin)  # gpiozero says so 1.2 s later, after the reads
        loop = asyncio.get_running_loop()
        late = loop.time() + 1.0
        await speak_until(box, lambda: loop.time() > late, within=2)  # the late release
        await box.settle()
        assert kinds(box) == [], "sent with nobody at the button"
        assert box.states() == ["connecting", "listening", "thinking"]


async def test_a_box_on_the_button_hangs_up_at_the_long_press_and_answers_once_lifted(
    tmp_path: Path, pins: Any
) -> None:
    """Through the real pin: held in a quiet room, the long press hangs up (the LEDs idle,
    nothing streams) and stays so while the button is down; lifted, the box answers."""
    cfg = config(button={"long_press_s": 0.3})
    async with running(tmp_path, cfg, parts_class=PinParts) as box:
        pin = pins.pin(PIN)
        pin.drive_low()
        await until(lambda: box.state == "connecting")
        box.link.deliver(SetupComplete)
        for _ in range(30):  # 1.2 s of a quiet room, past the long press and two reads
            box.mic.record(QUIET)
            await asyncio.sleep(0.04)
        await box.settle()
        assert box.states() == ["connecting", "listening", "idle"]
        assert not box.mic.forwarding and leds(box)[-1] == "idle"
        pin.drive_high()
        await asyncio.sleep(0.05)
        await box.settle()
        assert box.state == "idle"
        pin.drive_low()
        await until(lambda: box.state == "connecting")
        assert box.mic.forwarding


class Shorted(MockPin):
    def _set_pull(self, value: str) -> None:
        self._pull = value  # the short wins against the pull-up: the pin stays low


@contextlib.contextmanager
def held_pin() -> Iterator[Any]:
    """The button's pin held down (a box put on the button, a shorted wire) before anything
    opens it; yields the pin, to let it go."""
    with mock_pins(Shorted) as pins:
        pin = pins.pin(PIN)
        pin.drive_low()
        yield pin


@contextlib.asynccontextmanager
async def started_on_a_held_button(tmp_path: Path) -> AsyncIterator[tuple[Box, Any]]:
    """A box started with its button held down, settled; yields it and the pin."""
    with held_pin() as pin:
        async with running(tmp_path, parts_class=PinParts) as box:
            await asyncio.sleep(0.1)
            await box.settle()
            yield box, pin


async def test_a_button_held_down_at_start_is_said_and_ignored_until_released(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A box put on the button (or a shorted wire) at boot: nothing streams, and one
    journal line says why the box looks ready and its button does nothing."""
    caplog.set_level(logging.INFO, "device.appliance")
    async with started_on_a_held_button(tmp_path) as (box, pin):
        assert box.state == "idle" and not box.mic.forwarding and leds(box) == ["idle"]
        said = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(said) == 1 and "GPIO 17 reads pressed" in said[0].getMessage()
        assert getattr(said[0], "LIVE_DEVICE", None) == "button"
        pin.drive_high()
        pin.drive_low()
        await until(lambda: box.state == "connecting")
        assert box.mic.forwarding


class Seen(list[str]):
    """The events a ButtonInput reported, in order."""

    def __call__(self, event: str, _at: float) -> None:
        self.append(event)


@pytest.fixture
def quick_reads(monkeypatch: pytest.MonkeyPatch) -> float:
    import device.hw.button

    monkeypatch.setattr(device.hw.button, "CHECK_S", 0.02)
    return 0.02


async def test_a_lost_release_is_reported_once_and_cancels_the_long_press(
    quick_reads: float,
) -> None:
    LossyPin.lose_next = False
    with mock_pins(LossyPin) as pins:
        seen = Seen()
        button = ButtonInput(PIN, seen, hold_time=0.3, bounce_time=None)
        button.start()
        pin = pins.pin(PIN)
        pin.drive_low()
        await until(lambda: seen == ["pressed"])
        LossyPin.lose_next = True
        pin.drive_high()
        await until(lambda: seen == ["pressed", "released"])
        await asyncio.sleep(0.4)  # past the hold time
        assert seen == ["pressed", "released"], "no long press of a button let go"
        pin.drive_low()  # gpiozero, behind, says nothing: the read reports it
        await until(lambda: seen[-1] == "pressed")
        pin.drive_high()  # gpiozero in step again: reported once
        await until(lambda: seen[-1] == "released")
        await asyncio.sleep(5 * quick_reads)
        assert seen == ["pressed", "released", "pressed", "released"]
        button.stop()


async def test_a_button_held_down_at_start_opens_nothing_until_pressed_anew(
    quick_reads: float,
) -> None:
    """A box put on the button before the daemon starts: never taken for a press."""
    with held_pin() as pin:
        seen = Seen()
        button = ButtonInput(PIN, seen, hold_time=None, bounce_time=None)
        button.start()
        assert button.is_pressed
        await asyncio.sleep(10 * quick_reads)
        pin.drive_high()
        await asyncio.sleep(5 * quick_reads)
        assert "pressed" not in seen
        pin.drive_low()
        await until(lambda: "pressed" in seen)
        button.stop()


async def test_a_button_stopped_while_held_reports_nothing_more(
    pins: Any, quick_reads: float
) -> None:
    seen = Seen()
    button = ButtonInput(PIN, seen, hold_time=None, bounce_time=None)
    button.start()
    pin = pins.pin(PIN)
    pin.drive_low()
    await until(lambda: seen == ["pressed"])
    button.stop()
    pin.drive_high()
    await asyncio.sleep(5 * quick_reads)
    assert seen == ["pressed"]


async def test_a_tap_after_a_lost_release_is_a_press_and_a_release() -> None:
    """After a release gpiozero lost (read back from the pin), gpiozero takes the button
    for down still: the next tap it reports only as a release. A hands-free tap (start or
    end the conversation) is shorter than two reads of the pin: a press and a release
    all the same."""
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


async def test_the_doctor_beside_the_service_tells_of_a_button_held_since_it_opened(
    tmp_path: Path,
) -> None:
    async with started_on_a_held_button(tmp_path) as (box, pin):
        assert box.state == "idle"
        line = held_by_the_service("button", box.appliance.status(), box.appliance.cfg)
        assert line.status is Status.WARN, format_result(line)
        assert f"GPIO {PIN} reads pressed" in line.measured
        assert "ground" in (line.fix or "")
        said = "\n".join(summary_lines(box.appliance.status()))  # `ctl status`
        assert "button:   reads pressed since" in said, said
        # Let go and pressed as a person does: a press like any other, nothing to tell.
        pin.drive_high()
        pin.drive_low()
        await until(lambda: box.state == "connecting")
        line = held_by_the_service("button", box.appliance.status(), box.appliance.cfg)
        assert line.status is Status.SKIP, format_result(line)
        assert "button:" not in "\n".join(summary_lines(box.appliance.status()))


@pytest.mark.parametrize("wired", ["shorted", "busy"])
async def test_the_doctor_not_waiting_for_a_press_still_tells_a_miswired_button(
    tmp_path: Path, wired: str
) -> None:
    """Not from a terminal (over `ssh box live-appliance doctor`, from a script) or with
    --no-button, nobody is there to press: but a pin that reads pressed, or that cannot be
    opened, needs nobody to be seen, and the line was a SKIP that let the doctor pass."""
    from gpiozero import LED

    with held_pin() if wired == "shorted" else mock_pins():
        held = LED(PIN) if wired == "busy" else None  # another program holds the line
        try:
            result = await check_button(context(tmp_path, Options(button=False)))
        finally:
            if held is not None:
                held.close()
    wanted = Status.WARN if wired == "shorted" else Status.FAIL
    assert result.status is wanted, format_result(result)
    assert f"GPIO {PIN}" in result.measured


async def test_the_doctor_not_waiting_for_a_press_skips_a_button_that_reads_released(
    tmp_path: Path,
) -> None:
    with mock_pins():
        result = await check_button(context(tmp_path, Options(button=False)))
    assert result.status is Status.SKIP and "not waiting for a press" in result.measured


class Driven(MockPin):
    """A pin the module drives either way: the pull resistor changes nothing."""

    def _set_pull(self, value: str) -> None:
        self._pull = value


async def test_a_module_driving_its_pin_high_is_heard_while_touched(tmp_path: Path) -> None:
    cfg = config(button={"active_high": True})
    with mock_pins(Driven) as pins:
        pin = pins.pin(PIN)
        pin.drive_low()  # the module at rest
        async with running(tmp_path, cfg, parts_class=PinParts) as box:
            await box.settle()
            assert box.state == "idle" and not box.mic.forwarding
            assert not box.appliance.status()["button_held"]
            pin.drive_high()  # touched
            await until(lambda: box.state == "connecting")
            assert box.mic.forwarding
            pin.drive_low()  # let go
            await until(lambda: not box.mic.forwarding)


def test_active_high_is_a_setting_of_the_button(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[button]\nactive_high = true\n")
    assert settings.load(path).button.active_high is True
    assert settings.Config().button.active_high is False  # a button to ground, as wired


async def test_the_doctor_tells_a_silent_module_its_own_wiring(tmp_path: Path) -> None:
    """No press seen on a box set for a module that drives its pin high: the fix said to
    wire "the other leg on ground", which is the button it is not."""
    from test_doctor import context

    from device.doctor.gpio import check_button
    from device.doctor.result import Options

    with mock_pins():
        ctx = context(tmp_path, Options(button_wait_s=0.2), button={"active_high": True})
        result = await check_button(ctx)
    assert result.fix is not None and "ground" not in result.fix, result.fix
    assert "active_high" in result.fix


async def test_an_active_high_button_held_at_rest_is_not_told_to_set_active_high(
    tmp_path: Path,
) -> None:
    """A module that drives its pin high at rest and low while touched (active low),
    configured `active_high = true`: the pin reads pressed before anyone pressed it, and
    the doctor's fix said the button goes to ground and such a module "needs [button]
    active_high = true", the setting that already is, and is the cause."""
    from gpiozero.pins.mock import MockPin

    class DrivenHighAtRest(MockPin):
        def _set_pull(self, value: str) -> None:
            self._pull = value  # the module's output wins over the pull-down: high
            self.drive_high()

    ctx = context(tmp_path, Options(button_wait_s=0.2), button={"active_high": True})
    with mock_pins(DrivenHighAtRest):
        result = await check_button(ctx)
    assert result.status is Status.WARN and "reads pressed" in result.measured, result
    assert "active_high = true" not in (result.fix or ""), result.fix
    assert "active_high = false" in (result.fix or ""), result.fix


async def test_an_active_high_module_held_at_rest_is_told_by_its_pin(tmp_path: Path) -> None:
    """`[button] active_high = true` on GPIO 27, a module that reads high with nobody at
    it: the fix names the pin to look at, as it does for a button to ground."""
    from gpiozero.pins.mock import MockPin
    from helpers import mock_pins
    from test_doctor import context

    from device.doctor.gpio import check_button
    from device.doctor.result import Options, Status

    class DrivenHighAtRest(MockPin):
        def _set_pull(self, value: str) -> None:
            self._pull = value
            self.drive_high()

    ctx = context(tmp_path, Options(button_wait_s=0.2), button={"active_high": True, "pin": 27})
    with mock_pins(DrivenHighAtRest):
        result = await check_button(ctx)
    assert result.status is Status.WARN, result
    assert "GPIO 27" in (result.fix or ""), result.fix
