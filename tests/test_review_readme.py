"""The README's examples, run as an owner would paste them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from device import tools

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
