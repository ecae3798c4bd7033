"""Tests that kill hand mutants of stop 54's code which the suite let live: each checks
something a Pi owner sees (journal words, what reaches the service, doctor output)."""

from __future__ import annotations

from typing import Any

import pytest

from device.config import ToolsConfig
from device.tools import Device, Registry, declarations


def test_an_undeclarable_parameter_is_named_with_the_types_that_work() -> None:
    """A tuple parameter the Live API cannot declare: the journal names the parameter and
    says which types work, not pydantic's text cut to one line (a careless bound on the
    error's location fell back to that, still naming the tool and the word "position")."""
    registry = Registry()

    @registry.tool
    def point_camera(device: Device, position: tuple[int, int]) -> dict[str, Any]:
        """Turn the camera to an x, y position."""
        return {"position": list(position)}

    with pytest.raises(TypeError) as caught:
        declarations(ToolsConfig(enabled=("point_camera",)), registry)
    said = str(caught.value)
    assert said.startswith("tool point_camera: parameter position: "), said
    assert "the Live API cannot declare its type" in said, said
    assert "use int, float, str, bool, a Literal, an Enum, or a list of one of them" in said
