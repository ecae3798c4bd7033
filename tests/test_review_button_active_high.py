"""A button module that drives its pin high while pressed (a TTP223 touch sensor, a
breakout board with its own pull-down): with the pull-up and "pressed = low", the box took
the module's idle level for a press held down, and letting go of it for a press: the
microphone streamed the room exactly while nobody touched it."""

from __future__ import annotations

from pathlib import Path

from fakes import config, running
from gpiozero.pins.mock import MockPin
from helpers import mock_pins, until
from test_button_faults import PIN, PinParts

from device import config as settings


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
