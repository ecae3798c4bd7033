"""GPIO pins an owner can name in the configuration: only those a button or an LED can be
wired to are accepted, so a mistake is one line at start, not a box that retries for ever."""

from __future__ import annotations

from pathlib import Path

import pytest

from device import cli, config


@pytest.mark.parametrize(
    "settings",
    [
        # The README's wiring table gives each GPIO's header pin beside it ("GPIO 5 / 6 / 13
        # (pins 29 / 31 / 33)"): those numbers are no GPIO on the header, and gpiozero
        # refuses them as the service opens them ("29 is not a valid pin name"): LEDs off,
        # tried again for as long as the box runs.
        "[leds]\npins = [29, 31, 33]",
        "[button]\npin = 40",
        '[leds]\nkind = "apa102"\ndata_pin = 29\nclock_pin = 31',
        "[camera]\nled_pin = 37",
    ],
)
def test_a_pin_no_button_or_led_can_be_wired_to_is_refused_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], settings: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(settings + "\n")
    with pytest.raises(config.ConfigError, match="between 0 and 27"):
        config.load(path)
    assert cli.main(["doctor", "config", "--config", str(path), "--json"]) == 1
    assert "between 0 and 27" in capsys.readouterr().out


def test_the_highest_header_gpio_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[button]\npin = 27\n[leds]\nkind = \"single\"\npins = [26]\n")
    assert config.load(path).button.pin == 27


@pytest.mark.parametrize(
    ("settings", "wanted"),
    [
        # `dtparam=spi=on` (the README's setup for the pixels) gives the kernel both of SPI0's
        # chip selects (cs-gpios 8 and 7), whichever the pixels use: a button or LED there
        # fails to open for as long as the box runs ("GPIO busy"), tried again for ever.
        ('[hardware]\nprofile = "respeaker-2mic"\n[button]\npin = 8',
         "pin and the pixels' SPI0 CE0 both name GPIO 8"),
        ('[leds]\nkind = "apa102"\nspi_bus = 0\nspi_device = 0\n[camera]\nled_pin = 7',
         "the pixels' SPI0 CE1 and .camera. led_pin both name GPIO 7"),
        # SPI1's overlays (spi1-2cs for chip select 1) take every chip select up to it.
        ('[leds]\nkind = "apa102"\nspi_bus = 1\nspi_device = 1\n[button]\npin = 18',
         "pin and the pixels' SPI1 CE0 both name GPIO 18"),
    ],
)
def test_a_pin_the_pixels_spi_bus_gives_the_kernel_is_refused(
    tmp_path: Path, settings: str, wanted: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(settings + "\n")
    with pytest.raises(config.ConfigError, match=wanted):
        config.load(path)
