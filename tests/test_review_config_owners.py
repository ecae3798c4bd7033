"""A setting written under no section, or the wrong one, that several sections have
([button] and [leds] active_high, [camera] and [tools] enabled): the error said no section
had it, or listed the wrong section's settings, where one that a single section has is
told where it goes."""

from __future__ import annotations

from pathlib import Path

import pytest

from device import config


@pytest.mark.parametrize(
    ("settings", "wanted"),
    [
        ("active_high = true\n[button]\npin = 17", "a setting of [button] and [leds]"),
        ("enabled = false\n[button]\npin = 17", "a setting of [camera] and [tools]"),
        ("[camera]\nactive_high = true", "a setting of [button] and [leds]"),
    ],
)
def test_a_setting_of_several_sections_misplaced_names_them(
    tmp_path: Path, settings: str, wanted: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(settings + "\n")
    with pytest.raises(config.ConfigError, match=wanted.replace("[", r"\[").replace("]", r"\]")):
        config.load(path)
