"""How a device PortAudio lists is opened through ALSA."""

from __future__ import annotations

import pytest

from device.audio.alsa import alsa_name


@pytest.mark.parametrize(
    ("listed", "opened"),
    [
        ("USB Audio Device: - (hw:1,0)", "hw:1,0"),
        ("Loopback: PCM (hw:0,1)", "hw:0,1"),
        ("pulse", "pulse"),
        ("default", "default"),
        ("dmix", "dmix"),
        ("a name with (hw:1,0) inside", "a name with (hw:1,0) inside"),
    ],
)
def test_a_listed_device_is_opened_by_its_alsa_name(listed: str, opened: str) -> None:
    assert alsa_name(listed) == opened
