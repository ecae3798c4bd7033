"""How a device PortAudio lists is opened through ALSA, and whether it is a card's own."""

from __future__ import annotations

import pytest

from device.audio.alsa import alsa_name, is_hardware


@pytest.mark.parametrize(
    ("listed", "opened", "hardware"),
    [
        ("USB Audio Device: - (hw:1,0)", "hw:1,0", True),
        ("Loopback: PCM (hw:0,1)", "hw:0,1", True),
        ("pulse", "pulse", False),
        ("default", "default", False),
        ("dmix", "dmix", False),
        ("a name with (hw:1,0) inside", "a name with (hw:1,0) inside", False),
    ],
)
def test_a_listed_device_is_opened_by_its_alsa_name(
    listed: str, opened: str, hardware: bool
) -> None:
    assert alsa_name(listed) == opened
    assert is_hardware(listed) is hardware
