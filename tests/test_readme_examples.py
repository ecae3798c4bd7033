"""The README's examples, run as an owner would paste them."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from device import config, tools
from device.config import Config

README = Path(__file__).resolve().parent.parent / "README.md"


@dataclass
class BlinkingActions:
    """DeviceActions with the method the README says to add first."""

    blinked: list[int] = field(default_factory=list)

    def volume(self) -> float:
        return 1.0

    def set_volume(self, level: float) -> None:
        pass

    def end_conversation(self) -> None:
        pass

    def blink(self, times: int) -> None:
        self.blinked.append(times)


def test_the_readmes_tool_added_to_tools_py_is_declared_bounded_and_runs() -> None:
    """The README: "Adding a tool is one function in device/tools.py". Its `blink`, pasted
    there as it is, registers; its bounds reach the model's schema and refuse 11 blinks;
    the default and the dict it returns are what the model gets."""
    snippet = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert snippet, "no Python example in the README"
    registry = tools.Registry()
    namespace: dict[str, Any] = {**vars(tools), "DEVICE_TOOLS": registry}
    exec(compile(snippet[1], "README.md", "exec"), namespace)  # as if written in tools.py
    blink = registry.select(("blink",))["blink"]
    schema = blink.declaration().parameters
    assert schema is not None and schema.properties is not None
    times = schema.properties["times"]
    assert (times.minimum, times.maximum, times.description) == (1, 10, "how many blinks")
    with pytest.raises(ValueError, match="times"):
        blink.arguments({"times": 11})
    actions = BlinkingActions()
    device = tools.Device(actions)
    assert blink.function(device, **blink.arguments({})) == {"blinked": 3}
    assert actions.blinked == [3]


@pytest.mark.parametrize("pins", [[5, 6, 13, 19], [5, 6, 13, 19, 26]])
def test_multi_leds_on_more_pins_than_colours_stop_the_start_naming_the_setting(
    tmp_path: Path, pins: list[int]
) -> None:
    """README: "A bad value stops the daemon at start with one line naming the file and
    the key ... and what is allowed". `kind = "multi"` takes a red, a green and a blue
    LED; a fourth pin loaded, and the service ran with its LEDs off, trying them again
    for ever ("LEDs off: ValueError: ..."), while the doctor's config line said PASS."""
    path = tmp_path / "config.toml"
    path.write_text(f'[leds]\nkind = "multi"\npins = {pins}\n')
    with pytest.raises(config.ConfigError, match=r"\[leds\] pins") as refused:
        config.load(path, key=False)
    assert "at most 3" in str(refused.value) and str(path) in str(refused.value)
    for fine in ([5], [5, 6, 13]):
        path.write_text(f'[leds]\nkind = "multi"\npins = {fine}\n')
        assert config.load(path, key=False).leds.pins == tuple(fine)


@pytest.mark.parametrize(("section", "name"), [
    ("conversation", "silence_ms"),
    ("conversation", "start_sensitivity"),
    ("conversation", "end_sensitivity"),
    ("conversation", "prefix_padding_ms"),
    ("live", "compression_trigger_tokens"),
    ("live", "compression_target_tokens"),
])
def test_the_readme_gives_each_detection_and_compression_setting_its_line_and_range(
    section: str, name: str
) -> None:
    """An owner tuning the service's speech detection or compression reads the README's
    sample: each setting on a line of its own, with what it takes (the values, or the
    range that stops the start when left), not named in passing after another's."""
    spec = next(f for f in dataclasses.fields(config.SECTIONS[section]) if f.name == name)
    (line,) = [line for line in README.read_text().splitlines()
               if re.match(rf"#? ?{name} = ", line)]
    if "bounds" in spec.metadata:
        low, high = spec.metadata["bounds"]
        assert f"{low:g}-{high:g}" in line, line
    else:
        assert '"low" or "high"' in line, line
    assert "toggle mode" in line or section == "live", line


#: The Raspberry Pi's 40-pin header: BCM GPIO number by physical pin, and its grounds.
HEADER_GPIO = {3: 2, 5: 3, 7: 4, 8: 14, 10: 15, 11: 17, 12: 18, 13: 27, 15: 22, 16: 23,
               18: 24, 19: 10, 21: 9, 22: 25, 23: 11, 24: 8, 26: 7, 27: 0, 28: 1, 29: 5,
               31: 6, 32: 12, 33: 13, 35: 19, 36: 16, 37: 26, 38: 20, 40: 21}  # fmt: skip


GROUNDS = {6, 9, 14, 20, 25, 30, 34, 39}


def test_the_readmes_wiring_is_the_default_pins_at_their_header_pins() -> None:
    text = README.read_text()
    wiring = text[text.index("### Wiring"):]
    wiring = wiring[: wiring.index("\n\n", wiring.index("| button"))]
    button = re.search(r"\| button \| GPIO (\d+) \(pin (\d+)\) \|([^\n]*)", wiring)
    assert button is not None, wiring
    defaults = Config()
    assert int(button[1]) == defaults.button.pin and HEADER_GPIO[int(button[2])] == int(button[1])
    assert "ground (pin " in button[3] and "pull-up" in button[3]
    assert int(re.search(r"ground \(pin (\d+)\)", button[3])[1]) in GROUNDS  # type: ignore[index]
    led = re.search(r"\| RGB LED [^|]*\| GPIO ([\d /]+) \(pins ([\d /]+)\) \|([^\n]*)", wiring)
    assert led is not None, wiring
    gpios = tuple(int(n) for n in led[1].split("/"))
    assert defaults.leds.kind == "rgb" and gpios == defaults.leds.pins
    assert [HEADER_GPIO[int(n)] for n in led[2].split("/")] == list(gpios)
    assert "resistor" in led[3]
    assert int(re.search(r"ground \(pin (\d+)\)", led[3])[1]) in GROUNDS  # type: ignore[index]


